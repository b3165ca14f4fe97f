#pragma once
// Replies of cluster_client's connections built in one arena per reply: hiredis's reader makes
// every element of a reply (an XREADGROUP of 4,096 entries has some 57,000) with its own
// allocations, and freeing them is as dear; here the reader's object functions place a
// reply's elements and strings in a few large blocks, freed at once with the reply. The
// objects are hiredis's `redisReply`, read as usual; they are released with `release_reply`,
// never `freeReplyObject`.

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>

#include <hiredis/hiredis.h>
#include <hiredis/read.h>

namespace tradeagg::redis::detail {

/// Blocks of memory handed out in order, freed together.
class reply_arena {
public:
    /// A new arena, or null if out of memory.
    [[nodiscard]] static reply_arena* make() noexcept {
        void* raw = std::malloc(sizeof(reply_arena));
        return raw == nullptr ? nullptr : new (raw) reply_arena();
    }

    /// Frees the arena and everything allocated from it.
    static void destroy(reply_arena* a) noexcept {
        block* b = a->head_;
        while (b != nullptr) {
            block* prev = b->prev;
            std::free(b);
            b = prev;
        }
        a->~reply_arena();
        std::free(a);
    }

    /// `n` bytes, 8-aligned; null if out of memory.
    [[nodiscard]] void* allocate(std::size_t n) noexcept {
        n = (n + 7) & ~std::size_t{7};
        if (head_ == nullptr || head_->size - head_->used < n) {
            const std::size_t size = std::max(n, next_size_);
            next_size_ = std::min(next_size_ * 2, max_block);
            void* raw = std::malloc(sizeof(block) + size);
            if (raw == nullptr) {
                return nullptr;
            }
            head_ = new (raw) block{head_, size, 0};
        }
        void* p = reinterpret_cast<char*>(head_ + 1) + head_->used;
        head_->used += n;
        return p;
    }

private:
    struct alignas(16) block {
        block* prev;
        std::size_t size;
        std::size_t used;
    };
    static constexpr std::size_t max_block = std::size_t{1} << 22;

    reply_arena() = default;

    block* head_ = nullptr;
    std::size_t next_size_ = 4'096;
};

/// A reply element and the arena of its reply.
struct arena_reply {
    reply_arena* arena;
    redisReply reply;
};

[[nodiscard]] inline reply_arena* arena_of(const void* reply) noexcept {
    const auto* r = static_cast<const char*>(reply) - offsetof(arena_reply, reply);
    return reinterpret_cast<const arena_reply*>(r)->arena;
}

/// A reply element of `type` for `task`, in its reply's arena (a new one for a reply's top
/// element), and set as its parent's element. Null if out of memory.
[[nodiscard]] inline redisReply* arena_element(const redisReadTask* task, int type) noexcept {
    reply_arena* a = task->parent == nullptr ? reply_arena::make() : arena_of(task->parent->obj);
    if (a == nullptr) {
        return nullptr;
    }
    void* raw = a->allocate(sizeof(arena_reply));
    if (raw == nullptr) {
        if (task->parent == nullptr) {
            reply_arena::destroy(a);
        }
        return nullptr;
    }
    auto* e = new (raw) arena_reply{a, redisReply{}};
    e->reply.type = type;
    if (task->parent != nullptr) {
        static_cast<redisReply*>(task->parent->obj)->element[task->idx] = &e->reply;
    }
    return &e->reply;
}

/// Releases a reply built by `arena_reply_functions` (its top element).
inline void release_reply(void* reply) noexcept {
    if (reply != nullptr) {
        reply_arena::destroy(arena_of(reply));
    }
}

inline const redisReplyObjectFunctions arena_reply_functions{
    [](const redisReadTask* task, char* str, std::size_t len) -> void* {
        redisReply* r = arena_element(task, task->type);
        if (r == nullptr) {
            return nullptr;
        }
        auto* copy = static_cast<char*>(arena_of(r)->allocate(len + 1));
        if (copy == nullptr) {
            return nullptr; // the reader frees the reply built so far
        }
        std::memcpy(copy, str, len);
        copy[len] = '\0';
        r->str = copy;
        r->len = len;
        return r;
    },
    [](const redisReadTask* task, int elements) -> void* {
        redisReply* r = arena_element(task, REDIS_REPLY_ARRAY);
        if (r == nullptr || elements <= 0) {
            return r;
        }
        const std::size_t n = static_cast<std::size_t>(elements);
        void* slots = arena_of(r)->allocate(n * sizeof(redisReply*));
        if (slots == nullptr) {
            return nullptr;
        }
        std::memset(slots, 0, n * sizeof(redisReply*));
        r->element = static_cast<redisReply**>(slots);
        r->elements = n;
        return r;
    },
    [](const redisReadTask* task, long long value) -> void* {
        redisReply* r = arena_element(task, REDIS_REPLY_INTEGER);
        if (r != nullptr) {
            r->integer = value;
        }
        return r;
    },
    [](const redisReadTask* task) -> void* { return arena_element(task, REDIS_REPLY_NIL); },
    [](void* reply) { release_reply(reply); },
};

/// Has `c` build its replies in arenas: release them with `release_reply`.
inline void use_reply_arenas(redisContext* c) noexcept {
    c->reader->fn = const_cast<redisReplyObjectFunctions*>(&arena_reply_functions);
}

} // namespace tradeagg::redis::detail
