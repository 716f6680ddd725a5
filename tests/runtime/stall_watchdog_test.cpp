// StallWatchdog: one line when no update finishes within the limit, nothing before the first
// update, while paused, or while updates keep finishing.
#include "runtime/stall_watchdog.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

namespace tls {
namespace {

using std::chrono::milliseconds;

struct Calls {
  std::atomic<int> count{0};
  std::string line;
  StallWatchdog::OnStall callback() {
    return [this](const std::string& l) {
      line = l;
      ++count;
    };
  }
};

TEST(StallLimit, TheOptionOrTwentySlowestUpdatesAtLeastFiveMinutes) {
  EXPECT_EQ(stall_limit_seconds(10, 50), 10);
  EXPECT_EQ(stall_limit_seconds(0, 1), 300);
  EXPECT_EQ(stall_limit_seconds(0, 20), 400);
}

TEST(StallWatchdog, AStalledUpdateEndsTheRankWithOneLine) {
  Calls calls;
  {
    StallWatchdog dog(3, 0.2, calls.callback());
    dog.beat();
    std::this_thread::sleep_for(milliseconds(700));
  }
  EXPECT_EQ(calls.count, 1);
  EXPECT_NE(calls.line.find("rank 3: no update finished in 0.2 s (--stall-timeout)"),
            std::string::npos)
      << calls.line;
}

TEST(StallWatchdog, UpdatesThatKeepFinishingAreNotAStall) {
  Calls calls;
  {
    StallWatchdog dog(0, 0.3, calls.callback());
    for (int i = 0; i < 12; ++i) {
      dog.beat();
      std::this_thread::sleep_for(milliseconds(50));
    }
  }
  EXPECT_EQ(calls.count, 0);
}

TEST(StallWatchdog, NothingIsWatchedBeforeTheFirstUpdate) {
  Calls calls;
  {
    StallWatchdog dog(0, 0.1, calls.callback());
    std::this_thread::sleep_for(milliseconds(400));
  }
  EXPECT_EQ(calls.count, 0);
}

TEST(StallWatchdog, PausesAreNotWatchedAndTheLastResumeRestartsTheClock) {
  Calls calls;
  {
    StallWatchdog dog(0, 0.2, calls.callback());
    dog.beat();
    dog.pause();
    dog.pause();
    std::this_thread::sleep_for(milliseconds(300));
    dog.resume();
    std::this_thread::sleep_for(milliseconds(300));
    EXPECT_EQ(calls.count, 0) << "pauses nest";
    dog.resume();
    std::this_thread::sleep_for(milliseconds(100));
    EXPECT_EQ(calls.count, 0) << "the pause counted against the limit";
    std::this_thread::sleep_for(milliseconds(500));
  }
  EXPECT_EQ(calls.count, 1);
}

}  // namespace
}  // namespace tls
