#pragma once
// Stopping on Slurm's warning: SIGUSR1 (sbatch --signal=B:USR1@<s>, forwarded by the batch
// script) or SIGTERM (sent to every task at the time limit, KillWait seconds before SIGKILL) sets
// a flag; the trainer reduces it over all ranks every step, so all of them finish the same step,
// write a checkpoint and exit with kExitInterrupted.
#include "parallel/communicator.h"

namespace finemoe {

// "Interrupted, checkpoint written, requeue me": EX_TEMPFAIL from sysexits.h (temporary failure,
// try again). A batch script requeues on it: `[ $rc -eq 75 ] && scontrol requeue $SLURM_JOB_ID`.
inline constexpr int kExitInterrupted = 75;

// Installs the SIGUSR1 and SIGTERM handlers (SA_RESTART); they only record the signal.
void install_stop_signal_handlers();

// The signal that requested a stop on this rank (SIGUSR1 or SIGTERM), 0 when none did.
int stop_signal_received();

// Collective over `world`: true on every rank when any rank received a stop signal.
bool stop_requested_anywhere(Communicator& world);

// Forgets a received signal; for tests that raise signals one after another.
void clear_stop_request();

}  // namespace finemoe
