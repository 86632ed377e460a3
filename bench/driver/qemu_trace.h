// Writing an engine's events as QEMU's intel-iommu trace events: the `vtd_*` lines that
// hw/i386/intel_iommu.c logs for the same translation, fault or invalidation, in the "log"
// backend's format, so QEMU's tooling (and import_qemu_log) reads nestor's traffic. Events QEMU
// has no line for (cache fills, bind-layer calls, queue errors, operations no descriptor
// produces) become `nestor_<kind> key=value ...` lines, which QEMU-log readers skip. Every
// mapping, and where each format string comes from, is in docs/TRACE-FORMAT.md ("Writing QEMU-
// format trace events").
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <ostream>
#include <string>

#include "nestor/engine.h"
#include "nestor/events.h"

namespace nestor::trace {

// The event kinds by the names --trace-events takes: translate, fault, fill, invalidation,
// queue, bind (EventKindBits order), and "all".
inline constexpr size_t kEventKinds = 6;
inline constexpr std::array<const char *, kEventKinds> kEventKindNames = {
    "translate", "fault", "fill", "invalidation", "queue", "bind"};
// A comma list of those names as EventKindBits; std::invalid_argument naming a bad word.
uint32_t parse_event_kinds(const std::string &list);

struct QemuSinkOptions {
  // Kinds to hook (EventKindBits). With kEventTranslate, faults are written from the translate
  // events (which carry them too), so kEventFault adds nothing and is not hooked twice.
  uint32_t kinds = kEventTranslate | kEventInvalidation;
  // The "PID@SECONDS.USEC:" prefix (thread id, wall time) older QEMU versions' log backend
  // printed under `-msg timestamp=on`; off: the plain "vtd_NAME ARGS" lines of current QEMU.
  bool timestamps = false;
  // Also a nestor_invalidation line (the operation and the entries it removed, per cache) after
  // the QEMU lines of every invalidation. Operations QEMU has no line for get one regardless.
  bool invalidation_details = false;
  // Events written per second of now_ns (a fixed one-second window); the rest are counted in
  // dropped(). 0: no limit.
  uint64_t limit_per_second = 0;
  // Wall-clock nanoseconds since the epoch, for the prefix and the rate window (QEMU's prefix
  // is gettimeofday). Empty: std::chrono::system_clock.
  std::function<uint64_t()> now_ns;
};

// Appends the lines one event becomes, each ending in '\n' and starting with `prefix`. The
// sink's formatter, exposed so tests can check the text of an event they build themselves.
void format_qemu_event(const Event &event, bool invalidation_details, const std::string &prefix,
                       std::string *out);

// Writes an engine's events as text. Thread-safe: every engine thread may emit at once; one
// mutex covers the rate window, the formatting buffer and the output, so the lines of one event
// (a hit and its vtd_dmar_translate) are never split by another thread's.
class QemuTextSink {
 public:
  // The stream or FILE must outlive the sink.
  explicit QemuTextSink(std::ostream &out, QemuSinkOptions options = {});
  explicit QemuTextSink(std::FILE *out, QemuSinkOptions options = {});
  QemuTextSink(const QemuTextSink &) = delete;
  QemuTextSink &operator=(const QemuTextSink &) = delete;

  // The sink's hook on one engine, removed when this is destroyed (before the engine is) or
  // reset. The sink must outlive it.
  class Attachment {
   public:
    Attachment() = default;
    Attachment(Attachment &&other) noexcept;
    Attachment &operator=(Attachment &&other) noexcept;
    ~Attachment();
    void reset();

   private:
    friend class QemuTextSink;
    Attachment(Engine *engine, int id) : engine_(engine), id_(id) {}
    Engine *engine_ = nullptr;
    int id_ = -1;
  };
  // Hooks options().kinds on `engine`. Throws std::runtime_error if the engine refuses (all
  // of its hook slots taken).
  [[nodiscard]] Attachment attach(Engine &engine);

  // What the hook calls: applies the rate limit, then writes the event's lines.
  void write(const Event &event);
  // Writes "nestor_dropped limit=N/s KIND=COUNT ... total=COUNT" for the hooked kinds.
  void write_dropped_summary();

  // Events not written because of the rate limit, by kind (kEventKindNames order).
  std::array<uint64_t, kEventKinds> dropped() const;
  uint64_t written() const;  // events written
  const QemuSinkOptions &options() const { return options_; }

 private:
  static void on_event(void *self, const Event &event);
  uint64_t now_ns() const;
  void flush_locked();

  QemuSinkOptions options_;
  std::ostream *stream_ = nullptr;
  std::FILE *file_ = nullptr;
  mutable std::mutex mu_;
  std::string buf_;  // the current event's lines; reused so steady-state writes do not allocate
  std::string prefix_;
  uint64_t window_ = ~uint64_t{0};  // current one-second window (now_ns / 1e9)
  uint64_t in_window_ = 0;          // events written in it
  uint64_t written_ = 0;
  std::array<uint64_t, kEventKinds> dropped_{};
};

}  // namespace nestor::trace
