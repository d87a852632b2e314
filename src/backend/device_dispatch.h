#pragma once
// FINEMOE_ON_DEVICE_RETURN(call): inside a template over T, runs `call` and returns when the
// compute backend is CUDA and T = float; refuses other T on CUDA (ops::use_device); on the CPU, or
// in a build without CUDA, does nothing so that the CPU reference after it runs.
#include <type_traits>

#include "backend/ops.h"
#ifdef FINEMOE_WITH_CUDA
#include "backend/ops_cuda.h"
#define FINEMOE_ON_DEVICE_RETURN(call)              \
  if constexpr (std::is_same_v<T, float>) {         \
    if (::finemoe::ops::use_device<T>()) {          \
      call;                                         \
      return;                                       \
    }                                               \
  } else {                                          \
    ::finemoe::ops::use_device<T>();                \
  }
#else
#define FINEMOE_ON_DEVICE_RETURN(call)
#endif
