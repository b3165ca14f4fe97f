#pragma once
// Per-shard storage for token state: a Boost.Pool of fixed-size chunks, with its bytes counted.

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

// LeakSanitizer does not look for pointers in mapped pages: the arena's blocks, which hold token
// state that owns heap memory (a rolling window's slots), are registered as places to look.
#if defined(__SANITIZE_ADDRESS__)
#define TRADEAGG_LSAN_ROOTS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(leak_sanitizer)
#define TRADEAGG_LSAN_ROOTS 1
#endif
#endif
#if defined(TRADEAGG_LSAN_ROOTS) && defined(__linux__)
#include <sanitizer/lsan_interface.h>
#endif

#include <boost/pool/pool.hpp>

#include <tradeagg/config.hpp>

namespace tradeagg {
namespace detail {

/// The counter that Boost.Pool's block allocations are charged to. Boost.Pool's user allocator
/// is static, so the arena points this at its own counter around each call into the pool.
inline thread_local std::atomic<std::size_t>* arena_charge_to = nullptr;

/// Boost.Pool user allocator that counts the bytes it takes from and returns to the system.
/// On Linux its blocks are mapped pages of their own (`mmap`), not heap memory: a block the
/// arena releases goes back to the operating system at once, whatever else the process's heap
/// holds (the C allocator keeps a freed large block in its heap once its adaptive mmap
/// threshold has grown, where small long-lived allocations around it pin it).
struct counted_malloc {
    using size_type = std::size_t;
    using difference_type = std::ptrdiff_t;
    static constexpr std::size_t header = alignof(std::max_align_t);

    static char* malloc(size_type bytes) {
        const std::size_t total = bytes + header;
#if defined(__linux__)
        void* mapped =
            ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        auto* raw = mapped == MAP_FAILED ? nullptr : static_cast<char*>(mapped);
#if defined(TRADEAGG_LSAN_ROOTS)
        if (raw != nullptr) {
            __lsan_register_root_region(raw, total);
        }
#endif
#else
        auto* raw = static_cast<char*>(std::malloc(total));
#endif
        if (raw == nullptr) {
            return nullptr;
        }
        *reinterpret_cast<std::size_t*>(raw) = bytes;
        if (arena_charge_to != nullptr) {
            arena_charge_to->store(arena_charge_to->load(std::memory_order_relaxed) + bytes,
                                   std::memory_order_relaxed);
        }
        return raw + header;
    }
    static void free(char* block) {
        char* raw = block - header;
        const std::size_t bytes = *reinterpret_cast<std::size_t*>(raw);
        if (arena_charge_to != nullptr) {
            arena_charge_to->store(arena_charge_to->load(std::memory_order_relaxed) - bytes,
                                   std::memory_order_relaxed);
        }
#if defined(__linux__)
#if defined(TRADEAGG_LSAN_ROOTS)
        __lsan_unregister_root_region(raw, bytes + header);
#endif
        ::munmap(raw, bytes + header);
#else
        std::free(raw);
#endif
    }
};

struct charge_scope {
    explicit charge_scope(std::atomic<std::size_t>* c) noexcept : saved(arena_charge_to) {
        arena_charge_to = c;
    }
    ~charge_scope() { arena_charge_to = saved; }
    charge_scope(const charge_scope&) = delete;
    charge_scope& operator=(const charge_scope&) = delete;
    std::atomic<std::size_t>* saved;
};

} // namespace detail

/// Fixed-size object storage for one shard. Frees are O(1): the pool's unordered free list is
/// used, never `ordered_free` (which keeps the list sorted and costs a scan per free).
/// Single-threaded: only the owning shard's worker may create or destroy; the byte counters
/// may be read from any thread.
template <class T>
class arena {
    static_assert(alignof(T) <= alignof(std::max_align_t),
                  "pool chunks are aligned to max_align_t only");

public:
    /// Blocks start at `chunk_bytes` and double up to `max_chunk_bytes`; `reserve_objects` are
    /// allocated up front. Allocates.
    arena(std::size_t chunk_bytes, std::size_t max_chunk_bytes, std::size_t reserve_objects = 0)
        : pool_(object_size, objects_in(chunk_bytes), objects_in(max_chunk_bytes)) {
        if (reserve_objects > 0) {
            std::vector<void*> held;
            held.reserve(reserve_objects);
            const detail::charge_scope scope(&reserved_);
            for (std::size_t i = 0; i < reserve_objects; ++i) {
                void* p = pool_.malloc();
                if (p == nullptr) {
                    break;
                }
                held.push_back(p);
            }
            for (void* p : held) {
                pool_.free(p);
            }
        }
    }

    arena(const arena&) = delete;
    arena& operator=(const arena&) = delete;

    /// Every object must have been destroyed first.
    ~arena() {
        const detail::charge_scope scope(&reserved_);
        pool_.purge_memory();
    }

    /// Constructs a T. Allocates a new block when the free list is empty; throws
    /// std::bad_alloc if the system refuses.
    template <class... Args>
    [[nodiscard]] T* create(Args&&... args) {
        void* p = nullptr;
        {
            const detail::charge_scope scope(&reserved_);
            p = pool_.malloc();
        }
        if (p == nullptr) {
            throw std::bad_alloc();
        }
        T* obj = nullptr;
        try {
            obj = ::new (p) T(std::forward<Args>(args)...);
        } catch (...) {
            pool_.free(p);
            throw;
        }
        live_.store(live_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        return obj;
    }

    /// Destroys and frees in O(1). Never allocates.
    void destroy(T* obj) noexcept {
        obj->~T();
        pool_.free(obj);
        live_.store(live_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    }

    /// Bytes taken from the system. Thread-safe.
    [[nodiscard]] std::size_t reserved_bytes() const noexcept {
        return reserved_.load(std::memory_order_relaxed);
    }
    /// Bytes in live objects. Thread-safe.
    [[nodiscard]] std::size_t live_bytes() const noexcept { return live_objects() * object_size; }
    /// Objects alive. Thread-safe.
    [[nodiscard]] std::size_t live_objects() const noexcept {
        return live_.load(std::memory_order_relaxed);
    }

    /// Size of one object slot, rounded to the pool's alignment.
    static constexpr std::size_t object_size = (sizeof(T) + alignof(std::max_align_t) - 1) /
                                               alignof(std::max_align_t) *
                                               alignof(std::max_align_t);

private:
    static std::size_t objects_in(std::size_t bytes) noexcept {
        return bytes / object_size > 0 ? bytes / object_size : 1;
    }

    boost::pool<detail::counted_malloc> pool_;
    std::atomic<std::size_t> reserved_{0};
    std::atomic<std::size_t> live_{0};
};

} // namespace tradeagg
