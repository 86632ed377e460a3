#include "qemu_trace.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cinttypes>
#include <cstdarg>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace nestor::trace {

namespace {

constexpr uint64_t kPage = 4096;
// QEMU prints the leaf it cached; nestor keeps the translation, so the leaf is rebuilt from it
// with the bits the importer (and a reader of QEMU logs) looks at: R 0, W 1, PS 7.
constexpr uint64_t kPtePageSize = 1ull << 7;
// Largest address mask of a vtd_inv_desc_iotlb_pages line: 2^51 pages is what import_qemu_log
// accepts (a 2^52-page operation becomes two lines).
constexpr unsigned kMaxAddressMask = 51;

void vappendf(std::string *out, const char *fmt, va_list ap) {
  va_list again;
  va_copy(again, ap);
  char buf[256];
  const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  if (n > 0 && size_t(n) < sizeof buf) {
    out->append(buf, size_t(n));
  } else if (n > 0) {
    // Longer than the stack buffer (a queue error message): format again in place.
    const size_t at = out->size();
    out->resize(at + size_t(n) + 1);
    std::vsnprintf(out->data() + at, size_t(n) + 1, fmt, again);
    out->resize(at + size_t(n));
  }
  va_end(again);
}

[[gnu::format(printf, 2, 3)]] void appendf(std::string *out, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vappendf(out, fmt, ap);
  va_end(ap);
}

// One line as QEMU's log backend prints it: qemu_log("NAME " FMT "\n", args...), after the
// optional prefix. The format strings passed here are QEMU's hw/i386/trace-events strings with
// the same conversions, so the text is QEMU's byte for byte.
[[gnu::format(printf, 4, 5)]] void qemu_line(std::string *out, const std::string &prefix,
                                             const char *name, const char *fmt, ...) {
  *out += prefix;
  *out += name;
  *out += ' ';
  va_list ap;
  va_start(ap, fmt);
  vappendf(out, fmt, ap);
  va_end(ap);
  *out += '\n';
}

const char *scope_name(invq::Scope s) {
  switch (s) {
    case invq::Scope::kGlobal:
      return "global";
    case invq::Scope::kDomain:
      return "domain";
    case invq::Scope::kDevice:
      return "device";
    case invq::Scope::kPasid:
      return "pasid";
    case invq::Scope::kRange:
      return "range";
  }
  return "unknown";
}

void append_caches(std::string *out, uint8_t caches) {
  static constexpr std::pair<uint8_t, const char *> kNames[] = {{invq::kCacheContext, "context"},
                                                                {invq::kCachePasid, "pasid"},
                                                                {invq::kCacheIotlb, "iotlb"},
                                                                {invq::kCachePaging, "paging"},
                                                                {invq::kCacheDevTlb, "devtlb"}};
  bool first = true;
  for (const auto &[bit, name] : kNames) {
    if (!(caches & bit)) continue;
    if (!first) *out += ',';
    *out += name;
    first = false;
  }
  if (first) *out += "none";
}

// The canonical operation as key=value fields, each key after `key` ("op." where the line has
// a source-id and PASID of its own: nestor_bind).
void append_op(std::string *out, const invq::InvalidationOp &op, const char *key = "") {
  appendf(out, " %scaches=", key);
  append_caches(out, op.caches);
  appendf(out, " %sscope=%s %sdid=0x%x %ssid=0x%x", key, scope_name(op.scope), key,
          unsigned(op.did), key, unsigned(op.source_id));
  if (op.pasid == invq::kNoPasid)
    appendf(out, " %spasid=none", key);
  else
    appendf(out, " %spasid=0x%" PRIx32, key, op.pasid);
  appendf(out, " %saddr=0x%" PRIx64 " %snpages=%" PRIu64 " %sleaf=%d %sgpa=%d %sfm=%u", key,
          op.addr, key, op.npages, key, int(op.leaf), key, int(op.addr_is_gpa), key,
          unsigned(op.function_mask));
}

// vtd_dmar_translate(uint8_t bus, uint8_t slot, uint8_t func, uint64_t iova, uint64_t gpa,
// uint64_t mask), logged by vtd_iommu_translate after every successful translation.
void dmar_translate(std::string *out, const std::string &prefix, uint16_t sid, uint64_t iova,
                    uint64_t gpa, uint64_t mask) {
  qemu_line(out, prefix, "vtd_dmar_translate",
            "dev %02x:%02x.%02x iova 0x%" PRIx64 " -> gpa 0x%" PRIx64 " mask 0x%" PRIx64,
            unsigned(sid >> 8), unsigned((sid >> 3) & 0x1f), unsigned(sid & 7), iova, gpa, mask);
}

void format_translate(const TranslateEvent &t, const std::string &prefix, std::string *out) {
  const Request &q = t.request;
  const Result &r = t.result;
  if (!r.ok) {
    // vtd_report_fault: a qualified fault of an FPD context/PASID entry is not reported.
    if (t.fault_suppressed) {
      qemu_line(out, prefix, "vtd_fault_disabled", "Fault processing disabled for context entry");
      return;
    }
    // vtd_dmar_fault(uint16_t sid, int fault, uint64_t addr, bool is_write), from
    // vtd_report_dmar_fault with the request's (untruncated) address.
    qemu_line(out, prefix, "vtd_dmar_fault",
              "sid 0x%" PRIx16 " fault %d addr 0x%" PRIx64 " write %d", q.source_id,
              int(r.fault.reason), q.iova, int((q.access & kAccessWrite) != 0));
    return;
  }
  if (t.source == TranslateSource::kPassThrough) {
    // vtd_do_iommu_translate's pass-through branch: 4K, output = input, no IOTLB.
    const uint64_t iova = q.iova & ~(kPage - 1);
    qemu_line(out, prefix, "vtd_translate_pt", "source id 0x%" PRIx16 ", iova 0x%" PRIx64,
              q.source_id, iova);
    dmar_translate(out, prefix, q.source_id, iova, r.t.out & ~(kPage - 1), kPage - 1);
    return;
  }
  const uint64_t mask = (uint64_t{1} << r.t.page_shift) - 1;
  const uint64_t pte = (r.t.out & ~mask) | (r.t.perms & (kAccessRead | kAccessWrite)) |
                       (r.t.page_shift > 12 ? kPtePageSize : 0);
  // QEMU logs a hit when its IOTLB answered and an update when it walked and filled it;
  // nestor's handle cache sits in front of its IOTLB, so its answers are hits too.
  const bool hit = t.source == TranslateSource::kIotlb || t.source == TranslateSource::kHandleCache;
  if (hit)
    qemu_line(out, prefix, "vtd_iotlb_page_hit",
              "IOTLB page hit sid 0x%" PRIx16 " iova 0x%" PRIx64 " slpte 0x%" PRIx64
              " domain 0x%" PRIx16,
              q.source_id, q.iova, pte, t.domain);
  else
    qemu_line(out, prefix, "vtd_iotlb_page_update",
              "IOTLB page update sid 0x%" PRIx16 " iova 0x%" PRIx64 " slpte 0x%" PRIx64
              " domain 0x%" PRIx16,
              q.source_id, q.iova, pte, t.domain);
  dmar_translate(out, prefix, q.source_id, q.iova & ~mask, r.t.out & ~mask, mask);
}

// IOTLB (type 0x2) and PASID-based IOTLB (type 0x6) descriptors. Returns the caches the lines
// stand for (QEMU's IOTLB holds what nestor's IOTLB and paging-structure caches do), or 0 when
// no descriptor produces this operation.
uint8_t iotlb_lines(const invq::InvalidationOp &op, const std::string &prefix, std::string *out) {
  constexpr uint8_t kCovered = invq::kCacheIotlb | invq::kCachePaging;
  switch (op.scope) {
    case invq::Scope::kGlobal:
      qemu_line(out, prefix, "vtd_inv_desc_iotlb_global", "iotlb invalidate global");
      return kCovered;
    case invq::Scope::kDomain:
      qemu_line(out, prefix, "vtd_inv_desc_iotlb_domain",
                "iotlb invalidate whole domain 0x%" PRIx16, op.did);
      return kCovered;
    case invq::Scope::kPasid:
      if (op.pasid == invq::kNoPasid) return 0;
      qemu_line(out, prefix, "vtd_inv_desc_iotlb_pasid",
                "iotlb invalidate domain 0x%" PRIx16 " pasid 0x%" PRIx32, op.did, op.pasid);
      return kCovered;
    case invq::Scope::kRange:
      break;
    case invq::Scope::kDevice:
      return 0;
  }
  if (op.npages == 0 || (!op.addr_is_gpa && op.pasid == invq::kNoPasid)) return 0;
  // A descriptor names a naturally aligned block of 2^AM pages; a range from another front end
  // (typed calls, uAPI) is the blocks a guest would have sent for it, largest first.
  uint64_t page = op.addr / kPage;
  const uint64_t end = page + op.npages;
  while (page < end) {
    unsigned am = page ? unsigned(std::countr_zero(page)) : kMaxAddressMask;
    am = std::min({am, unsigned(std::bit_width(end - page)) - 1, kMaxAddressMask});
    const uint64_t addr = page * kPage;
    if (op.addr_is_gpa)
      qemu_line(out, prefix, "vtd_inv_desc_iotlb_pages",
                "iotlb invalidate domain 0x%" PRIx16 " addr 0x%" PRIx64 " mask 0x%" PRIx8, op.did,
                addr, uint8_t(am));
    else
      qemu_line(out, prefix, "vtd_inv_desc_iotlb_pasid_pages",
                "iotlb invalidate domain 0x%" PRIx16 " addr 0x%" PRIx64 " mask 0x%" PRIx8
                " pasid 0x%" PRIx32,
                op.did, addr, uint8_t(am), op.pasid);
    page += uint64_t{1} << am;
  }
  return kCovered;
}

// Context-cache descriptors (type 0x1). QEMU keeps no PASID cache apart from its context cache,
// so these lines stand for both.
uint8_t context_lines(const invq::InvalidationOp &op, const std::string &prefix, std::string *out) {
  constexpr uint8_t kCovered = invq::kCacheContext | invq::kCachePasid;
  switch (op.scope) {
    case invq::Scope::kDomain:
      // vtd_process_context_cache_desc logs the domain, then falls through to the global
      // invalidation, which logs vtd_inv_desc_cc_global.
      qemu_line(out, prefix, "vtd_inv_desc_cc_domain", "context invalidate domain 0x%" PRIx16,
                op.did);
      [[fallthrough]];
    case invq::Scope::kGlobal:
      qemu_line(out, prefix, "vtd_inv_desc_cc_global", "context invalidate globally");
      return kCovered;
    case invq::Scope::kDevice:
      // QEMU then logs vtd_inv_desc_cc_device for each of its address spaces the mask matches,
      // which only QEMU's device list knows; readers skip those lines anyway.
      qemu_line(out, prefix, "vtd_inv_desc_cc_devices",
                "context invalidate devices sid 0x%" PRIx16 " fmask 0x%" PRIx16, op.source_id,
                uint16_t(op.function_mask));
      return kCovered;
    default:
      return 0;
  }
}

// PASID-cache descriptors (type 0x7), with the events QEMU's PASID-cache support declares.
uint8_t pasid_cache_lines(const invq::InvalidationOp &op, const std::string &prefix,
                          std::string *out) {
  switch (op.scope) {
    case invq::Scope::kGlobal:
      qemu_line(out, prefix, "vtd_inv_desc_pasid_cache_gsi", "%s", "");
      return invq::kCachePasid;
    case invq::Scope::kDomain:
      qemu_line(out, prefix, "vtd_inv_desc_pasid_cache_dsi",
                "Domain selective PC invalidation domain 0x%" PRIx16, op.did);
      return invq::kCachePasid;
    case invq::Scope::kPasid:
      qemu_line(out, prefix, "vtd_inv_desc_pasid_cache_psi",
                "PASID selective PC invalidation domain 0x%" PRIx16 " pasid 0x%" PRIx32, op.did,
                op.pasid);
      return invq::kCachePasid;
    default:
      return 0;
  }
}

void format_invalidation(const InvalidationEvent &ev, bool details, const std::string &prefix,
                         std::string *out) {
  const invq::InvalidationOp &op = ev.op;
  uint8_t covered = 0;
  if (op.caches & invq::kCacheIotlb) covered |= iotlb_lines(op, prefix, out);
  if (op.caches & invq::kCacheContext)
    covered |= context_lines(op, prefix, out);
  else if (op.caches & invq::kCachePasid)
    covered |= pasid_cache_lines(op, prefix, out);
  // Caches no QEMU line stands for (device TLB, paging caches alone, scopes no descriptor has)
  // must still show up, or a reader would miss an invalidation.
  if (!details && (op.caches & ~covered) == 0) return;
  *out += prefix;
  *out += "nestor_invalidation";
  append_op(out, op);
  uint64_t removed = 0, over = 0;
  for (size_t c = 0; c < kEventCaches; ++c) {
    removed += ev.removed[c];
    over += ev.over[c];
  }
  appendf(out, " removed=%" PRIu64 " over=%" PRIu64, removed, over);
  for (size_t c = 0; c < kEventCaches; ++c)
    if (ev.removed[c])
      appendf(out, " removed.%s=%" PRIu64, event_cache_name(EventCache(c)), ev.removed[c]);
  *out += '\n';
}

// vtd_process_inv_desc's names for the descriptor types it logs with vtd_inv_desc.
const char *qemu_descriptor_name(uint8_t type) {
  switch (type) {
    case 0x1:
      return "context-cache";
    case 0x2:
      return "iotlb";
    case 0x3:
      return "device";
    case 0x4:
      return "iec";
    case 0x5:
      return "wait";
    case 0x6:
      return "p-iotlb";
    case 0x8:
      return "device-piotlb";
    default:
      return nullptr;  // PASID-cache (0x7) and unknown types: QEMU logs no vtd_inv_desc
  }
}

// An owner-direct queue (issue 17) has no QEMU counterpart, and its descriptors carry the
// guest's tags and addresses: QEMU's lines would read as the host's queue to an importer, so
// its events are nestor_queue lines naming the queue.
void format_owner_queue(const QueueEvent &q, const std::string &prefix, std::string *out) {
  *out += prefix;
  appendf(out, "nestor_queue owner_queue=%u", q.owner_queue);
  switch (q.type) {
    case QueueEventType::kDescriptor:
      appendf(out, " type=descriptor index=%" PRIu64 " code=0x%x", q.index, unsigned(q.type_code));
      for (unsigned i = 0; i < q.descriptor_bits / 64 && i < 4; ++i)
        appendf(out, " qw%u=0x%" PRIx64, i, q.raw[i]);
      if (q.is_op) append_op(out, q.op);
      break;
    case QueueEventType::kWaitCompleted:
      appendf(out, " type=wait-completed index=%" PRIu64 " sw=%d", q.index, int(q.status_write));
      if (q.status_write)
        appendf(out, " status_gpa=0x%" PRIx64 " data=0x%" PRIx32, q.status_addr, q.status_data);
      appendf(out, " if=%d fn=%d", int(q.interrupt), int(q.fence));
      break;
    case QueueEventType::kError:
      appendf(out, " type=error index=%" PRIu64 " error=\"%s\"", q.index, q.error ? q.error : "");
      break;
  }
  *out += '\n';
}

void format_queue(const QueueEvent &q, const std::string &prefix, std::string *out) {
  if (q.owner_queue != 0) {
    format_owner_queue(q, prefix, out);
    return;
  }
  if (q.type == QueueEventType::kDescriptor) {
    if (const char *name = qemu_descriptor_name(q.type_code)) {
      // vtd_inv_desc(const char *type, uint64_t hi, uint64_t lo): hi is qw1, lo qw0.
      qemu_line(out, prefix, "vtd_inv_desc",
                "invalidate desc type %s high 0x%" PRIx64 " low 0x%" PRIx64, name, q.raw[1],
                q.raw[0]);
      return;
    }
    *out += prefix;
    appendf(out, "nestor_queue type=descriptor index=%" PRIu64 " code=0x%x", q.index,
            unsigned(q.type_code));
    for (unsigned i = 0; i < q.descriptor_bits / 64 && i < 4; ++i)
      appendf(out, " qw%u=0x%" PRIx64, i, q.raw[i]);
    if (q.is_op) append_op(out, q.op);
    *out += '\n';
    return;
  }
  if (q.type == QueueEventType::kWaitCompleted && q.status_write) {
    // vtd_process_wait_desc logs the status write it is about to make.
    qemu_line(out, prefix, "vtd_inv_desc_wait_sw",
              "wait invalidate status write addr 0x%" PRIx64 " data 0x%" PRIx32, q.status_addr,
              q.status_data);
    return;
  }
  *out += prefix;
  if (q.type == QueueEventType::kWaitCompleted) {
    // QEMU's interrupt-only waits log a message that depends on its interrupt registers.
    appendf(out, "nestor_queue type=wait-completed sw=0 if=%d fn=%d\n", int(q.interrupt),
            int(q.fence));
    return;
  }
  appendf(out, "nestor_queue type=error index=%" PRIu64 " code=0x%x error=\"%s\"\n", q.index,
          unsigned(q.type_code), q.error ? q.error : "");
}

void format_fill(const FillEvent &f, const std::string &prefix, std::string *out) {
  *out += prefix;
  appendf(out,
          "nestor_fill cache=%s accepted=%d sid=0x%x pasid=0x%" PRIx32
          " domain=0x%x level=%u page_shift=%u perms=0x%x address=0x%" PRIx64 " output=0x%" PRIx64
          "\n",
          event_cache_name(f.cache), int(f.accepted), unsigned(f.source_id), f.pasid,
          unsigned(f.domain), unsigned(f.level), unsigned(f.page_shift), unsigned(f.perms),
          f.address, f.output);
}

void format_bind(const BindEvent &b, const std::string &prefix, std::string *out) {
  *out += prefix;
  appendf(out,
          "nestor_bind type=%s result=%d owner=%" PRIu32 " sid=0x%x pasid=0x%" PRIx32
          " domain=0x%x gpa=0x%" PRIx64 " hpa=0x%" PRIx64 " size=0x%" PRIx64,
          bind_event_name(b.type), b.result, b.owner, unsigned(b.source_id), b.pasid,
          unsigned(b.domain), b.gpa, b.hpa, b.size);
  if (b.type == BindEventType::kCacheInvalidate) append_op(out, b.op, "op.");
  *out += '\n';
}

size_t kind_index(uint32_t kind) {
  const size_t i = kind ? size_t(std::countr_zero(kind)) : 0;
  return i < kEventKinds ? i : 0;
}

}  // namespace

uint32_t parse_event_kinds(const std::string &list) {
  uint32_t kinds = 0;
  size_t from = 0;
  for (;;) {
    const size_t comma = list.find(',', from);
    const std::string word = list.substr(from, comma == std::string::npos ? comma : comma - from);
    bool known = word == "all";
    if (known) kinds |= kEventAll;
    for (size_t i = 0; i < kEventKinds && !known; ++i) {
      if (word != kEventKindNames[i]) continue;
      kinds |= 1u << i;
      known = true;
    }
    if (!known)
      throw std::invalid_argument("unknown event kind '" + word +
                                  "' (translate, fault, fill, invalidation, queue, bind, all)");
    if (comma == std::string::npos) return kinds;
    from = comma + 1;
  }
}

void format_qemu_event(const Event &event, bool invalidation_details, const std::string &prefix,
                       std::string *out) {
  switch (event.kind) {
    case kEventTranslate:
    case kEventFault:
      if (event.translate) format_translate(*event.translate, prefix, out);
      return;
    case kEventInvalidation:
      if (event.invalidation)
        format_invalidation(*event.invalidation, invalidation_details, prefix, out);
      return;
    case kEventQueue:
      if (event.queue) format_queue(*event.queue, prefix, out);
      return;
    case kEventCacheFill:
      if (event.fill) format_fill(*event.fill, prefix, out);
      return;
    case kEventBind:
      if (event.bind) format_bind(*event.bind, prefix, out);
      return;
    default:
      return;
  }
}

QemuTextSink::QemuTextSink(std::ostream &out, QemuSinkOptions options)
    : options_(std::move(options)), stream_(&out) {}

QemuTextSink::QemuTextSink(std::FILE *out, QemuSinkOptions options)
    : options_(std::move(options)), file_(out) {}

QemuTextSink::Attachment::Attachment(Attachment &&other) noexcept
    : engine_(other.engine_), id_(other.id_) {
  other.engine_ = nullptr;
}

QemuTextSink::Attachment &QemuTextSink::Attachment::operator=(Attachment &&other) noexcept {
  if (this != &other) {
    reset();
    engine_ = other.engine_;
    id_ = other.id_;
    other.engine_ = nullptr;
  }
  return *this;
}

QemuTextSink::Attachment::~Attachment() {
  reset();
}

void QemuTextSink::Attachment::reset() {
  if (engine_) engine_->remove_event_hook(id_);
  engine_ = nullptr;
}

QemuTextSink::Attachment QemuTextSink::attach(Engine &engine) {
  uint32_t kinds = options_.kinds & kEventAll;
  // A fault is also a translate event: hooking both would write it twice.
  if (kinds & kEventTranslate) kinds &= ~uint32_t{kEventFault};
  const int id = engine.add_event_hook(kinds, &QemuTextSink::on_event, this);
  if (id < 0)
    throw std::runtime_error(std::string("cannot hook the engine's events: ") + std::strerror(-id));
  return Attachment(&engine, id);
}

void QemuTextSink::on_event(void *self, const Event &event) {
  static_cast<QemuTextSink *>(self)->write(event);
}

uint64_t QemuTextSink::now_ns() const {
  if (options_.now_ns) return options_.now_ns();
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count());
}

void QemuTextSink::write(const Event &event) {
  std::lock_guard lock(mu_);
  const bool timed = options_.timestamps || options_.limit_per_second != 0;
  const uint64_t now = timed ? now_ns() : 0;
  if (options_.limit_per_second) {
    const uint64_t window = now / 1'000'000'000;
    if (window != window_) {
      window_ = window;
      in_window_ = 0;
    }
    if (in_window_ >= options_.limit_per_second) {
      ++dropped_[kind_index(event.kind)];
      return;
    }
    ++in_window_;
  }
  prefix_.clear();
  if (options_.timestamps)
    appendf(&prefix_, "%d@%zu.%06zu:", int(::gettid()), size_t(now / 1'000'000'000),
            size_t(now % 1'000'000'000 / 1000));
  buf_.clear();
  format_qemu_event(event, options_.invalidation_details, prefix_, &buf_);
  ++written_;
  flush_locked();
}

void QemuTextSink::write_dropped_summary() {
  std::lock_guard lock(mu_);
  buf_.clear();
  if (options_.limit_per_second)
    appendf(&buf_, "nestor_dropped limit=%" PRIu64 "/s", options_.limit_per_second);
  else
    buf_ += "nestor_dropped limit=none";
  uint64_t total = 0;
  for (size_t i = 0; i < kEventKinds; ++i) {
    if (!(options_.kinds & (1u << i))) continue;
    appendf(&buf_, " %s=%" PRIu64, kEventKindNames[i], dropped_[i]);
    total += dropped_[i];
  }
  appendf(&buf_, " total=%" PRIu64 "\n", total);
  flush_locked();
}

void QemuTextSink::flush_locked() {
  if (buf_.empty()) return;
  if (stream_) {
    stream_->write(buf_.data(), std::streamsize(buf_.size()));
  } else if (file_) {
    std::fwrite(buf_.data(), 1, buf_.size(), file_);
  }
}

std::array<uint64_t, kEventKinds> QemuTextSink::dropped() const {
  std::lock_guard lock(mu_);
  return dropped_;
}

uint64_t QemuTextSink::written() const {
  std::lock_guard lock(mu_);
  return written_;
}

}  // namespace nestor::trace
