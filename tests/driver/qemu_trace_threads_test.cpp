// The QEMU-text sink under threads translating at once through one engine (run under TSan
// with the other concurrency tests): each event's lines stay together and none is lost.
#include <gtest/gtest.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "qemu_trace.h"
#include "sink_workload.h"

namespace nestor::trace {
namespace {

// Threads translating at once: each event's lines stay together (a hit or update is followed
// by its own vtd_dmar_translate) and no event is lost.
TEST(QemuTextSink, LinesOfOneEventStayTogetherAcrossThreads) {
  SinkWorkload w;
  const uint16_t sids[] = {0x0010, 0x0018, 0x0100, 0x0208};
  const uint16_t dids[] = {1, 1, 2, 3};
  constexpr uint64_t kPages = 32, kRounds = 20;
  for (size_t d = 0; d < 4; ++d)
    for (uint64_t p = 0; p < kPages; ++p)
      w.map(dids[d], (0x100 + d) << 20 | p << 12, SinkWorkload::kHpa + ((d << 8 | p) << 12));
  std::ostringstream text;
  QemuTextSink sink(text);
  {
    QemuTextSink::Attachment hook = sink.attach(w.engine());
    std::vector<std::thread> threads;
    for (size_t d = 0; d < 4; ++d)
      threads.emplace_back([&, d] {
        for (uint64_t i = 0; i < kPages * kRounds; ++i) {
          const uint64_t iova = (0x100 + d) << 20 | (i % kPages) << 12;
          const Result r = w.engine().translate(machine::request(sids[d], 0, iova, kAccessRead,
                                                                 /*has_pasid=*/false));
          EXPECT_TRUE(r.ok);
        }
      });
    for (std::thread &t : threads) t.join();
  }
  std::istringstream in(text.str());
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 2 * 4 * kPages * kRounds);
  EXPECT_EQ(sink.written(), 4 * kPages * kRounds);
  for (size_t i = 0; i < lines.size(); i += 2) {
    ASSERT_EQ(lines[i].rfind("vtd_iotlb_page_", 0), 0u) << lines[i];
    const unsigned sid = std::stoul(lines[i].substr(lines[i].find(" sid 0x") + 7), nullptr, 16);
    char dev[64];
    std::snprintf(dev, sizeof dev, "vtd_dmar_translate dev %02x:%02x.%02x ", sid >> 8,
                  (sid >> 3) & 0x1f, sid & 7);
    ASSERT_EQ(lines[i + 1].rfind(dev, 0), 0u) << lines[i] << "\n" << lines[i + 1];
  }
}

}  // namespace
}  // namespace nestor::trace
