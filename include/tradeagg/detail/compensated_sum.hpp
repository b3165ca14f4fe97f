#pragma once

namespace tradeagg::detail {

/// A running sum with Neumaier's compensation: the rounding error of every addition is
/// carried separately, so the result does not depend on how many small quantities were added
/// to a large one (a hot token adds millions of trades to one daily volume).
struct compensated_sum {
    double sum = 0.0;
    double compensation = 0.0;

    constexpr void add(double x) noexcept {
        const double t = sum + x;
        // Branch on magnitude so the lost low-order bits come from the smaller operand.
        if ((sum >= 0 ? sum : -sum) >= (x >= 0 ? x : -x)) {
            compensation += (sum - t) + x;
        } else {
            compensation += (x - t) + sum;
        }
        sum = t;
    }

    /// Folds another partial sum in, keeping both compensations.
    constexpr void merge(const compensated_sum& other) noexcept {
        add(other.sum);
        compensation += other.compensation;
    }

    [[nodiscard]] constexpr double value() const noexcept { return sum + compensation; }
};

} // namespace tradeagg::detail
