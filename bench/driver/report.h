// Presenting a ScenarioReport: the end-of-run table, JSON for machines, gnuplot charts, and a
// progress bar for terminals.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

#include "workload.h"

namespace nestor::driver {

void print_table(const ScenarioReport &r, std::FILE *out);
// The report as one line of JSON (UTF-8; bytes that are not are replaced with U+FFFD), and
// that line written to `out` with a newline.
std::string json_text(const ScenarioReport &r);
void write_json(const ScenarioReport &r, std::FILE *out);

// Writes the data files and gnuplot scripts for the charts the report has data for, renders
// them to SVG with `gnuplot`, and returns the SVG paths. Throws with the reason when gnuplot
// is missing or fails.
std::vector<std::string> write_plots(const ScenarioReport &r, const std::string &dir);

// One line redrawn in place on a terminal: [=====>    ] 42%  12.3 M translations/s.
class ProgressBar {
 public:
  explicit ProgressBar(std::FILE *out) : out_(out) {}
  ~ProgressBar() { finish(); }
  void update(double fraction, uint64_t translations);
  void finish();

 private:
  std::FILE *out_;
  bool drawn_ = false;
  uint64_t last_count_ = 0;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace nestor::driver
