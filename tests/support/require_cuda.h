// Skips a test, naming why, when no CUDA device can be used (here: no driver or no GPU), so GPU
// tests never fail on a machine without one.
#pragma once

#include <gtest/gtest.h>

#include "kernels/device.h"

#define TLS_REQUIRE_CUDA()                                                   \
  do {                                                                       \
    if (cuda_device_count() == 0) GTEST_SKIP() << cuda_unavailable_reason(); \
  } while (0)
