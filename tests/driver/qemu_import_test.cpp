// QEMU VT-d trace-event import: a realistic log converts into a trace that replays without
// divergence on cached and uncached engines, both log line styles give the same trace,
// malformed lines of understood events are rejected with their line number, other lines are
// skipped, and a page re-mapped after a page-selective invalidation replays to its new address.
#include <gtest/gtest.h>

#include <cctype>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>

#include "qemu_import.h"
#include "trace.h"
#include "trace_records.h"

namespace nestor::trace {
namespace {

std::string read_fixture(const std::string &name) {
  std::ifstream in(std::string(NESTOR_TEST_DATA) + "/" + name);
  EXPECT_TRUE(in) << "missing fixture " << name;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<uint8_t> import_text(const std::string &text, QemuImportStats *stats = nullptr) {
  std::istringstream in(text);
  return import_qemu_log(in, stats);
}

// The log backend's "PID@SECONDS.USEC:" prefix, or nothing.
size_t prefix_length(const std::string &line) {
  const size_t at = line.find('@');
  const size_t colon = line.find(':');
  if (at == std::string::npos || colon == std::string::npos || at == 0 || colon < at) return 0;
  for (size_t i = 0; i < colon; ++i)
    if (i != at && !std::isdigit(static_cast<unsigned char>(line[i])) && line[i] != '.') return 0;
  return colon + 1;
}

std::string strip_prefixes(const std::string &text) {
  std::istringstream in(text);
  std::string line, out;
  while (std::getline(in, line)) out += line.substr(prefix_length(line)) + "\n";
  return out;
}

// Event lines of the log by name (first word after the prefix), counted independently of
// the importer.
std::map<std::string, uint64_t> count_events(const std::string &text) {
  std::map<std::string, uint64_t> n;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const std::string rest = line.substr(prefix_length(line));
    if (rest.rfind("vtd_", 0) == 0) ++n[rest.substr(0, rest.find(' '))];
  }
  return n;
}

TEST(QemuImport, RealisticLogReplaysWithoutDivergence) {
  const std::string log = read_fixture("qemu_vtd_realistic.log");
  QemuImportStats st;
  const std::vector<uint8_t> bytes = import_text(log, &st);
  SCOPED_TRACE(st.summary());

  std::map<std::string, uint64_t> n = count_events(log);
  uint64_t lines = 0, vtd_lines = 0;
  for (char c : log) lines += c == '\n';
  for (const auto &[name, count] : n) vtd_lines += count;
  const uint64_t invalidation_lines =
      n["vtd_inv_desc_iotlb_global"] + n["vtd_inv_desc_iotlb_domain"] +
      n["vtd_inv_desc_iotlb_pages"] + n["vtd_inv_desc_iotlb_pasid_pages"] +
      n["vtd_inv_desc_iotlb_pasid"] + n["vtd_inv_desc_cc_global"] + n["vtd_inv_desc_cc_domain"] +
      n["vtd_inv_desc_cc_devices"];
  EXPECT_EQ(st.lines, lines);
  EXPECT_EQ(st.events, vtd_lines);
  EXPECT_EQ(st.hits, n["vtd_iotlb_page_hit"]);
  EXPECT_EQ(st.updates, n["vtd_iotlb_page_update"]);
  EXPECT_EQ(st.faults, n["vtd_dmar_fault"]);
  EXPECT_EQ(st.translations, st.hits + st.updates + st.faults);
  EXPECT_EQ(st.invalidations, invalidation_lines);
  EXPECT_EQ(st.inconsistent, 0u);
  // Used: the translation, fault and invalidation events, and each vtd_dmar_translate (all
  // of them complete a hit or update here). Everything else is skipped.
  EXPECT_EQ(st.skipped, lines - st.translations - st.invalidations - n["vtd_dmar_translate"]);
  EXPECT_GT(st.synthesized, 0u) << "the log moves device 0x20 to another domain";

  for (bool caching : {true, false}) {
    SCOPED_TRACE(caching ? "cached" : "uncached");
    const ReplayResult res = replay_bytes(bytes, caching);
    EXPECT_EQ(res.divergences, 0u) << (res.messages.empty() ? "" : res.messages[0]);
    EXPECT_EQ(res.translations, st.translations);
    EXPECT_EQ(res.checked, st.translations);
    EXPECT_EQ(res.faults, n["vtd_dmar_fault"]);
    EXPECT_EQ(res.invalidations, st.invalidations + st.synthesized);
  }

  // The 2M leaf: the second 4K page touched inside it lands at the same offset of the 2M
  // output page, as vtd_dmar_translate's mask says.
  bool saw_large = false;
  for (const TranslateRecord &t : translations(bytes))
    if (t.req.iova == 0x40350000) {
      saw_large = true;
      EXPECT_EQ(t.expect, Expect::kOk);
      EXPECT_EQ(t.out, 0x80150000u);
    }
  EXPECT_TRUE(saw_large);
  EXPECT_TRUE(Reader(bytes).flags() & kFlagImported);
}

TEST(QemuImport, BothLineStylesGiveTheSameTrace) {
  const std::string log = read_fixture("qemu_vtd_realistic.log");
  const std::string plain = strip_prefixes(log);
  ASSERT_NE(log, plain) << "the fixture should use the PID@time: prefix";
  EXPECT_EQ(plain.find("4711@"), std::string::npos);
  QemuImportStats a, b;
  EXPECT_EQ(import_text(log, &a), import_text(plain, &b));
  EXPECT_EQ(a.summary(), b.summary());
}

TEST(QemuImport, MalformedKnownEventNamesItsLine) {
  auto message = [](const std::string &text) -> std::string {
    try {
      import_text(text);
    } catch (const Error &e) {
      return e.what();
    }
    return "";
  };
  const std::string ok =
      "vtd_iotlb_page_update IOTLB page update sid 0x18 iova 0x1000 slpte 0x5003 domain 0x1\n";
  EXPECT_EQ(message(ok), "");
  const std::string bad_sid = message(ok + "vtd_iotlb_page_hit IOTLB page hit sid zz\n");
  EXPECT_NE(bad_sid.find("qemu log line 2"), std::string::npos) << bad_sid;
  EXPECT_NE(bad_sid.find("vtd_iotlb_page_hit"), std::string::npos) << bad_sid;
  EXPECT_NE(bad_sid.find("sid"), std::string::npos) << bad_sid;
  // With the prefix, after skipped lines, and with trailing text.
  const std::string trailing =
      message("hello\n\n12@3.000004:vtd_inv_desc_iotlb_global iotlb invalidate global now\n");
  EXPECT_NE(trailing.find("qemu log line 3"), std::string::npos) << trailing;
  EXPECT_NE(message("vtd_inv_desc_iotlb_pages iotlb invalidate domain 0x10000 addr 0x0 mask 0x0"),
            "");
  EXPECT_NE(message("vtd_inv_desc_iotlb_pages iotlb invalidate domain 0x1 addr 0x0 mask 0x40"), "");
  EXPECT_NE(message("vtd_dmar_fault sid 0x18 fault 6 addr 0x1000 write 2"), "");
  EXPECT_NE(message("vtd_dmar_translate dev 00:03.00 iova 0x0 -> gpa 0x0 mask 0x7ff"), "");
  EXPECT_NE(message("vtd_iotlb_page_update IOTLB page update sid 0x1 iova 0x11112222333344445 "
                    "slpte 0x3 domain 0x1"),
            "");
}

TEST(QemuImport, OtherLinesAreSkipped) {
  const std::string text =
      "qemu-system-x86_64: terminating on signal 15\n"
      "\n"
      "vtd_reg_write addr 0x88 size 0x8 value 0x0\n"
      "vtd_iotlb_reset IOTLB reset (reason: iotlb exceeds size limit)\n"
      "vtd_inv_desc_cc_device context invalidate device 00:04.00\n"
      "vtd_dmar_translate dev 00:04.00 iova 0x1000 -> gpa 0x1000 mask 0xfff\n"
      "12@34: not a trace line\n"
      "vtd_unheard_of_event 1 2 3\n"
      "virtio_notify vdev 0x5555 vq 0x6666\n";
  QemuImportStats st;
  const std::vector<uint8_t> bytes = import_text(text, &st);
  EXPECT_EQ(st.lines, 9u);
  EXPECT_EQ(st.events, 5u);
  EXPECT_EQ(st.skipped, 9u);
  EXPECT_EQ(st.translations + st.invalidations, 0u);
  EXPECT_TRUE(translations(bytes).empty());
  EXPECT_TRUE(Reader(bytes).flags() & kFlagImported);
}

// The line limit is exact, with or without a final line end, and a line past it names itself.
TEST(QemuImport, LineLimitIsExact) {
  const std::string at_limit(kMaxQemuLogLine, 'x');
  for (const std::string &tail : {std::string("\n"), std::string()}) {
    QemuImportStats st;
    EXPECT_NO_THROW(import_text("first\n" + at_limit + tail, &st));
    EXPECT_EQ(st.lines, 2u);
    EXPECT_EQ(st.skipped, 2u);
    try {
      import_text("first\n" + at_limit + "y" + tail);
      ADD_FAILURE() << "a line one byte past the limit was accepted";
    } catch (const Error &e) {
      EXPECT_NE(std::string(e.what()).find("qemu log line 2 is longer than the 4096-byte"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(QemuImport, PageRemappedAfterInvalidationReplaysToTheNewAddress) {
  QemuImportStats st;
  const std::vector<uint8_t> bytes = import_text(read_fixture("qemu_vtd_remap.log"), &st);
  EXPECT_EQ(st.translations, 3u);
  EXPECT_EQ(st.invalidations, 1u);
  EXPECT_EQ(st.inconsistent, 0u);
  EXPECT_EQ(st.synthesized, 0u);
  const std::vector<TranslateRecord> ts = translations(bytes);
  ASSERT_EQ(ts.size(), 3u);
  EXPECT_EQ(ts[0].out, 0x200000u);
  EXPECT_EQ(ts[1].out, 0x200008u);
  EXPECT_EQ(ts[2].out, 0x300010u);
  EXPECT_EQ(ts[2].perms, kAccessRead);
  for (bool caching : {true, false}) {
    const ReplayResult res = replay_bytes(bytes, caching);
    EXPECT_EQ(res.divergences, 0u) << (res.messages.empty() ? "" : res.messages[0]);
    EXPECT_EQ(res.checked, 3u);
  }

  // Without the invalidation the cached engine keeps the old page: the import's invalidation
  // record is what makes the remap visible.
  Writer w(Reader(bytes).flags());
  Reader in(bytes);
  Record rec;
  while (in.next(&rec))
    if (rec.tag != Tag::kInvalidate) w.append(rec);
  const std::vector<uint8_t> stripped = w.finish();
  EXPECT_EQ(replay_bytes(stripped, true).divergences, 1u);
  EXPECT_EQ(replay_bytes(stripped, false).divergences, 0u);
}

TEST(QemuImport, LargeLeafWithoutPageSizeIsTakenAs2M) {
  // No vtd_dmar_translate: the PS bit alone decides, and 2M is assumed.
  QemuImportStats st;
  const std::vector<uint8_t> bytes = import_text(
      "vtd_iotlb_page_update IOTLB page update sid 0x8 iova 0x40212345 slpte 0x80000083 "
      "domain 0x1\n"
      "vtd_iotlb_page_hit IOTLB page hit sid 0x8 iova 0x403ff000 slpte 0x80000083 domain 0x1\n",
      &st);
  const std::vector<TranslateRecord> ts = translations(bytes);
  ASSERT_EQ(ts.size(), 2u);
  EXPECT_EQ(ts[0].out, 0x80012345u);
  EXPECT_EQ(ts[1].out, 0x801ff000u);
  EXPECT_EQ(st.inconsistent, 0u);
  EXPECT_EQ(replay_bytes(bytes, true).divergences, 0u);
}

TEST(QemuImport, OnAReusedEngineGivesTheSameTrace) {
  const std::string log = read_fixture("qemu_vtd_realistic.log");
  QemuImportStats fresh_stats;
  const std::vector<uint8_t> fresh = import_text(log, &fresh_stats);
  Engine engine(qemu_import_engine_config());
  for (int round = 0; round < 2; ++round) {
    if (round) engine.reset();
    std::istringstream in(log);
    QemuImportStats st;
    EXPECT_EQ(import_qemu_log(in, &st, engine), fresh) << "round " << round;
    EXPECT_EQ(st.summary(), fresh_stats.summary());
  }
  // RAM the importer did not add is refused.
  Engine other(qemu_import_engine_config());
  ASSERT_EQ(other.memory().add_ram(0, 1ull << 20), 0);
  std::istringstream in(log);
  EXPECT_THROW(import_qemu_log(in, nullptr, other), std::invalid_argument);
}

}  // namespace
}  // namespace nestor::trace
