#pragma once
// Exit codes a batch script can act on.
namespace finemoe {
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;       // a fault; the record says why
inline constexpr int kExitBadInput = 2;      // bad parameters, data or checkpoint; nothing started
}  // namespace finemoe
