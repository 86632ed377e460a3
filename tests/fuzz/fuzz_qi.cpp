// Fuzz target (a): raw VT-d invalidation descriptors and queue-register sequences.
//  1. invq::decode_descriptor on arbitrary 128/256-bit descriptors: never crashes; an accepted
//     descriptor yields a well-formed op (range ops have 1 <= npages and no page overflow).
//  2. invq::InvalidationQueue over a fuzz-provided memory: IQA/IQT writes, clear_error; head
//     stays inside the queue, stops on errors, never passes the tail.
//  3. The engine's QI (EngineInvalidation::qi_*) over machine memory the input fills with
//     descriptors, interleaved with translations: no crash, hang or UB; a successful tail write
//     leaves head == tail; a refused one leaves the queue in error.
#include <cstring>
#include <vector>

#include "fuzz_common.h"
#include "nestor/invalidation.h"
#include "nestor/vtd/descriptor.h"
#include "nestor/vtd/queue.h"

using namespace nestor;

namespace {

void check_decoded(const invq::DecodeResult &d) {
  if (!d.ok() || d.descriptor.kind != invq::DecodedKind::kOp) return;
  const invq::InvalidationOp &op = d.descriptor.op;
  FUZZ_CHECK(op.caches != 0, "accepted op names no cache");
  if (op.scope == invq::Scope::kRange) {
    FUZZ_CHECK(op.npages >= 1, "empty range accepted");
    FUZZ_CHECK((op.addr & 0xFFF) == 0, "unaligned range 0x%llx", (unsigned long long)op.addr);
    FUZZ_CHECK((op.addr >> 12) + op.npages - 1 >= (op.addr >> 12), "range wraps");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FuzzedDataProvider in(data, size);

  // 1. Direct decoding of the first 64 bytes, both widths.
  {
    invq::RawDescriptor raw;
    for (auto &q : raw.qw) q = in.ConsumeIntegral<uint64_t>();
    invq::DecodeOptions opt;
    opt.mamv = in.ConsumeIntegralInRange<uint8_t>(0, 63);
    opt.strict_address_alignment = in.ConsumeBool();
    check_decoded(invq::decode_descriptor(raw, invq::DescriptorWidth::k256, opt));
    raw.qw[2] = raw.qw[3] = 0;
    check_decoded(invq::decode_descriptor(raw, invq::DescriptorWidth::k128, opt));
  }

  // 2. The bare queue over a small fuzz-filled memory window.
  {
    std::vector<uint8_t> window =
        in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(0, 2048));
    const uint64_t window_base = 0x10000;
    invq::InvalidationQueue q;
    auto fetch = [&](uint64_t pa, void *buf, size_t len) {
      if (pa < window_base || pa - window_base > window.size() ||
          len > window.size() - (pa - window_base))
        return false;
      std::memcpy(buf, window.data() + (pa - window_base), len);
      return true;
    };
    size_t sunk = 0;
    auto sink = [&](const invq::DecodedDescriptor &) { ++sunk; };
    for (int i = in.ConsumeIntegralInRange<int>(0, 16); i > 0; --i) {
      switch (in.ConsumeIntegralInRange<int>(0, 3)) {
        case 0:
          q.write_iqa(window_base | (in.ConsumeIntegral<uint64_t>() & 0xFFF));
          break;
        case 1:
          q.write_iqa(in.ConsumeIntegral<uint64_t>());
          break;
        case 2: {
          const size_t head_before = q.head();
          const bool ok = q.write_iqt(in.ConsumeIntegral<uint64_t>(), fetch, sink);
          FUZZ_CHECK(q.head() < q.entries() || q.entries() == 0, "head %zu beyond %zu", q.head(),
                     q.entries());
          if (ok)
            FUZZ_CHECK(q.head() == q.tail(), "ok tail write left head %zu tail %zu", q.head(),
                       q.tail());
          else
            FUZZ_CHECK(q.error() != invq::QiError::kNone, "refused tail write without error");
          (void)head_before;
          break;
        }
        default:
          q.clear_error();
          break;
      }
    }
  }

  // 3. The engine's queue over machine memory, with a translation now and then.
  unsigned key = 0;
  const EngineConfig cfg = fuzz::small_config(in, &key);
  Engine &e = fuzz::pooled_engine(cfg, key, 1u << 20);
  // A bit of the first byte, looked at without consuming it, turns the hooks on.
  fuzz::CheckedEvents events(e, size > 0 && (data[0] & 0x40));
  MachineMemory &mem = e.memory();
  e.set_root_table(in.ConsumeIntegral<uint16_t>() & ~0xFFFu);
  EngineInvalidation &inv = e.invalidation();
  bool configured = false;
  while (in.remaining_bytes() > 0) {
    switch (in.ConsumeIntegralInRange<int>(0, 6)) {
      case 0: {  // program IQA: base in or out of RAM, entries and width arbitrary
        const uint64_t base = in.ConsumeBool() ? (in.ConsumeIntegral<uint32_t>() & 0xFF000)
                                               : in.ConsumeIntegral<uint64_t>();
        const uint64_t entries = in.ConsumeBool()
                                     ? (uint64_t{1} << in.ConsumeIntegralInRange<int>(0, 16))
                                     : in.ConsumeIntegral<uint64_t>();
        const unsigned bits =
            in.ConsumeBool() ? 128 : (in.ConsumeBool() ? 256 : in.ConsumeIntegral<unsigned>());
        configured = inv.qi_configure(base, entries, bits) == 0 || configured;
        break;
      }
      case 1: {  // descriptors into memory (anywhere in RAM: ring, status, tables alike)
        const uint64_t pa = in.ConsumeIntegral<uint32_t>() & 0xFFFF0;
        const std::vector<uint8_t> bytes =
            in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(1, 128));
        mem.write(pa, bytes.data(), bytes.size());
        break;
      }
      case 2: {  // a typical descriptor pair at a slot: op + wait with status write
        const uint64_t slot = in.ConsumeIntegralInRange<uint64_t>(0, 255);
        const uint64_t base = inv.queue().base();
        const uint64_t width = inv.queue().width() == invq::DescriptorWidth::k256 ? 32 : 16;
        uint64_t qw[4] = {in.ConsumeIntegral<uint64_t>() & 0xFFFFF'FFFF'FF7Full,
                          in.ConsumeIntegral<uint64_t>(), 0, 0};
        mem.write(base + slot * width, qw, width);
        const uint64_t wait[4] = {0x25 | uint64_t(in.ConsumeIntegral<uint32_t>()) << 32,
                                  in.ConsumeIntegral<uint32_t>() & 0xFFFFC, 0, 0};
        mem.write(base + ((slot + 1) % 256) * width, wait, width);
        break;
      }
      case 3: {
        const int rc = inv.qi_write_tail(in.ConsumeIntegralInRange<uint64_t>(0, 300));
        FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -EBUSY, "qi_write_tail returned %d", rc);
        if (rc == 0) FUZZ_CHECK(inv.queue().head() == inv.queue().tail(), "head != tail after ok");
        if (rc == -EBUSY)
          FUZZ_CHECK(inv.queue().error() != invq::QiError::kNone, "EBUSY without error");
        if (rc == -EINVAL && configured) {
          // a bad tail stops the queue like hardware (IQE); nothing else to check
        }
        break;
      }
      case 4:
        inv.queue().clear_error();
        break;
      case 5: {
        Request r;
        r.source_id = in.ConsumeIntegral<uint16_t>();
        r.has_pasid = in.ConsumeBool();
        r.pasid = in.ConsumeIntegral<uint32_t>();
        r.iova = in.ConsumeIntegral<uint64_t>();
        r.access = in.ConsumeIntegralInRange<uint8_t>(0, 7);
        r.privileged = in.ConsumeBool();
        (void)e.translate(r);
        break;
      }
      default: {  // typed op + wait through the same processor
        invq::InvalidationOp op;
        op.caches = in.ConsumeIntegral<uint8_t>() & invq::kAllCaches;
        op.scope = static_cast<invq::Scope>(in.ConsumeIntegralInRange<uint8_t>(0, 4));
        op.did = in.ConsumeIntegral<uint16_t>();
        op.pasid = in.ConsumeIntegral<uint32_t>();
        op.addr = in.ConsumeIntegral<uint64_t>() & ~uint64_t{0xFFF} & ((uint64_t{1} << 63) - 1);
        op.npages = in.ConsumeIntegralInRange<uint64_t>(1, 1u << 20);
        op.addr &= (invq::kMaxPageNumber - op.npages) << 12;  // documented bound: no page overflow
        op.addr_is_gpa = in.ConsumeBool();
        op.leaf = in.ConsumeBool();
        inv.submit(op);
        inv.wait();
        break;
      }
    }
  }
  return 0;
}
