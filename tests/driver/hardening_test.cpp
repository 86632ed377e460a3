// Issue 13: what a trace may ask of a replay is bounded against the RAM it declares, and
// records with fields wider than their type or unaligned entry stores are rejected with the
// byte offset (docs/TRACE-FORMAT.md, docs/LIMITS.md).
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "trace_reject.h"

namespace nestor::trace {
namespace {

// A trace assembled byte by byte, so records the Writer could never produce can be made.
class RawTrace {
 public:
  RawTrace() {
    Writer w;
    const std::vector<uint8_t> &empty = w.finish();
    bytes_.assign(empty.begin(), empty.begin() + 16);  // the header alone
  }
  RawTrace &tag(Tag t) {
    bytes_.push_back(uint8_t(t));
    ++records_;
    return *this;
  }
  RawTrace &v(uint64_t x) {
    do {
      bytes_.push_back(uint8_t((x & 0x7F) | (x > 0x7F ? 0x80 : 0)));
      x >>= 7;
    } while (x);
    return *this;
  }
  RawTrace &b(uint8_t x) {
    bytes_.push_back(x);
    return *this;
  }
  size_t offset() const { return bytes_.size(); }
  std::vector<uint8_t> finish() {
    std::vector<uint8_t> out = bytes_;
    out.push_back(uint8_t(Tag::kEnd));
    uint64_t n = records_;
    do {
      out.push_back(uint8_t((n & 0x7F) | (n > 0x7F ? 0x80 : 0)));
      n >>= 7;
    } while (n);
    return out;
  }

 private:
  std::vector<uint8_t> bytes_;
  uint64_t records_ = 0;
};

// Item 10: 64 zero-fill records of 64 MiB (a few hundred bytes of trace) made replay touch
// 4 GiB whatever RAM the trace declared.
TEST(TraceBounds, ZeroFillsMayNotExceedTheDeclaredRam) {
  RawTrace t;
  t.tag(Tag::kRam).v(0).v(256ull << 20);
  size_t fifth = 0;
  for (int i = 0; i < 64; ++i) {
    if (i == 4) fifth = t.offset();
    t.tag(Tag::kZero).v(uint64_t(i % 4) << 26).v(64ull << 20);
  }
  const std::string why = reject_reason(t.finish());
  EXPECT_NE(why.find("zero fills up to byte " + std::to_string(fifth)), std::string::npos) << why;
  EXPECT_NE(why.find("more than the 268435456 bytes of RAM declared"), std::string::npos) << why;
}

TEST(TraceBounds, WritesOutsideTheDeclaredRamAreRejectedAtTheirOffset) {
  RawTrace t;
  t.tag(Tag::kRam).v(0).v(1ull << 20);
  const size_t at = t.offset();
  t.tag(Tag::kZero).v(1ull << 32).v(64ull << 20);
  const std::string why = reject_reason(t.finish());
  EXPECT_NE(why.find("zero fill of 67108864 bytes at 0x100000000 (record at byte " +
                     std::to_string(at) + ") lies outside the RAM"),
            std::string::npos)
      << why;
  RawTrace w;
  w.tag(Tag::kRam).v(0).v(1ull << 20);
  w.tag(Tag::kWrite).v((1ull << 20) - 2).v(4).b(1).b(2).b(3).b(4);
  EXPECT_NE(reject_reason(w.finish()).find("lies outside the RAM"), std::string::npos);
  RawTrace huge;
  huge.tag(Tag::kRam).v(0).v(1ull << 40);
  huge.tag(Tag::kRam).v(1ull << 41).v(4096);
  EXPECT_NE(reject_reason(huge.finish()).find("exceeds the limits"), std::string::npos);
}

// Item 17: docs/TRACE-FORMAT.md says write64 is 8-byte aligned and fields are range checked;
// a DID of 2^40 was truncated to 16 bits and an unaligned write64 applied.
TEST(TraceBounds, WideFieldsAndUnalignedEntryStoresAreRejected) {
  RawTrace t;
  t.tag(Tag::kRam).v(0).v(1ull << 20);
  const size_t at = t.offset();
  t.tag(Tag::kWrite64).v(0x1004).v(0x1234);
  EXPECT_NE(reject_reason(t.finish())
                .find("write64 at byte " + std::to_string(at) + " to unaligned address 0x1004"),
            std::string::npos);

  auto invalidation = [](uint64_t did, uint64_t sid, uint64_t pasid, uint64_t pfsid) {
    RawTrace r;
    r.tag(Tag::kInvalidate).b(4).b(1).b(0).v(did).v(sid).v(pasid).v(0).v(0).b(0).v(pfsid).b(0);
    return reject_reason(r.finish());
  };
  EXPECT_EQ(invalidation(7, 0x100, 0, 0), "");
  for (const std::string &why : {invalidation(1ull << 40, 0, 0, 0), invalidation(1, 1 << 16, 0, 0),
                                 invalidation(1, 0, 1ull << 32, 0), invalidation(1, 0, 0, 1 << 16)})
    EXPECT_NE(why.find("invalidation record at byte 16 has a DID, source-id, PASID or PFSID out "
                       "of range"),
              std::string::npos)
        << why;
  RawTrace th;
  th.tag(Tag::kThread).v(1ull << 33);
  EXPECT_NE(reject_reason(th.finish()).find("beyond 32 bits"), std::string::npos);
}

}  // namespace
}  // namespace nestor::trace
