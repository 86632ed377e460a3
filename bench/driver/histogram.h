// Latency histogram with log-linear buckets (16 sub-buckets per power of two, so any recorded
// value is reported within 1/16 = 6.25% of itself): fixed size, no allocation when recording,
// one per thread and merged at the end.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <utility>
#include <vector>

namespace nestor::driver {

class LatencyHistogram {
 public:
  static constexpr unsigned kSubBits = 4;
  static constexpr unsigned kSub = 1u << kSubBits;
  static constexpr unsigned kBuckets = (64 - kSubBits + 1) * kSub;

  void record(uint64_t ns) {
    ++counts_[index(ns)];
    ++count_;
    sum_ += ns;
    max_ = std::max(max_, ns);
    min_ = std::min(min_, ns);
  }

  void merge(const LatencyHistogram &o) {
    for (unsigned i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
    count_ += o.count_;
    sum_ += o.sum_;
    max_ = std::max(max_, o.max_);
    min_ = std::min(min_, o.min_);
  }

  uint64_t count() const { return count_; }
  uint64_t max() const { return count_ ? max_ : 0; }
  uint64_t min() const { return count_ ? min_ : 0; }
  double mean() const { return count_ ? double(sum_) / double(count_) : 0.0; }

  // The smallest bucket upper bound below which at least fraction q of the values lie,
  // clamped to the exact maximum (so p100 is the max, not a bucket bound).
  uint64_t percentile(double q) const {
    if (!count_) return 0;
    const double want = q * double(count_);
    uint64_t seen = 0;
    for (unsigned i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen > 0 && double(seen) >= want) return std::min(upper(i), max_);
    }
    return max_;
  }

  // (value, cumulative fraction) at each non-empty bucket: the latency CDF.
  std::vector<std::pair<uint64_t, double>> cdf() const {
    std::vector<std::pair<uint64_t, double>> out;
    uint64_t seen = 0;
    for (unsigned i = 0; i < kBuckets; ++i) {
      if (!counts_[i]) continue;
      seen += counts_[i];
      out.emplace_back(std::min(upper(i), max_), double(seen) / double(count_));
    }
    return out;
  }

  // Bucket of a value: values below kSub have a bucket each; above, the top kSubBits+1 bits.
  static unsigned index(uint64_t v) {
    if (v < kSub) return unsigned(v);
    const unsigned msb = 63u - unsigned(std::countl_zero(v));
    const unsigned shift = msb - kSubBits;
    return (shift + 1) * kSub + unsigned((v >> shift) & (kSub - 1));
  }
  // Largest value that falls in bucket i.
  static uint64_t upper(unsigned i) {
    if (i < kSub) return i;
    const unsigned shift = i / kSub - 1;
    const uint64_t base = (uint64_t(kSub) | (i % kSub)) << shift;
    return base + ((uint64_t{1} << shift) - 1);
  }

 private:
  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0, sum_ = 0, max_ = 0, min_ = ~uint64_t{0};
};

}  // namespace nestor::driver
