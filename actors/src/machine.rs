//! The contract every machine keeps, and every executor that drives one
//! (the simulator's world, the live node's shell, a replay) must honour.
//! Like quinn-proto's `Connection`, a machine is a protocol with no I/O:
//! time and inputs go in, effects and a deadline come out.
//!
//! Driving a machine:
//!
//! 1. Feed [`Machine::start_input`] once, first.
//! 2. Feed every input as it arrives with [`Machine::handle`], passing the
//!    executor's clock as `now_ms`. **Time only moves forward**: `now_ms`
//!    never decreases from one call to the next (machines assert it). It is
//!    the node's own clock, so two machines on different nodes may disagree
//!    about it; machines only ever compare durations measured on one clock.
//! 3. Carry out the effects appended to `out`, in order, and feed their
//!    results back later as inputs (store replies by operation id, job
//!    results by job id, upload results by slot and attempt).
//! 4. After **every** `handle`, read [`Machine::next_deadline`] and feed
//!    [`Machine::tick_input`] once `now_ms` reaches it. **Ticks may arrive
//!    late** (a frozen process, a busy executor): a machine treats a late
//!    tick like a timely one. A tick before the deadline is harmless.
//!
//! Inputs may be **duplicated, delayed or reordered** by the network, and
//! results may be stale (from an earlier epoch or attempt): machines match
//! every result to what they are waiting for and ignore the rest. Anything
//! a machine needs to know about its node (the lease's validity, the view
//! of members, control records) arrives as an ordinary input; a machine
//! never reads shared state on the side.

/// A state machine of reelfleet's functional core.
pub trait Machine {
    type Input;
    type Effect;
    /// The first input: load state, begin renewing, report.
    fn start_input() -> Self::Input;
    /// The input that says a deadline passed.
    fn tick_input() -> Self::Input;
    /// Takes one input at `now_ms` and appends the effects it causes.
    fn handle(&mut self, now_ms: u64, input: Self::Input, out: &mut Vec<Self::Effect>);
    /// When the machine next wants a tick (`None`: only inputs wake it).
    fn next_deadline(&self) -> Option<u64>;
}

/// Implements [`Machine`] by delegating to the machine's own inherent
/// `handle` and `next_deadline`.
macro_rules! machine {
    ($m:ty, $i:ty, $e:ty, start: $start:expr) => {
        impl $crate::machine::Machine for $m {
            type Input = $i;
            type Effect = $e;
            fn start_input() -> $i {
                $start
            }
            fn tick_input() -> $i {
                <$i>::Tick
            }
            fn handle(&mut self, now_ms: u64, input: $i, out: &mut Vec<$e>) {
                <$m>::handle(self, now_ms, input, out)
            }
            fn next_deadline(&self) -> Option<u64> {
                <$m>::next_deadline(self)
            }
        }
    };
}

machine!(
    crate::channel::ChannelMachine,
    crate::channel::ChannelInput,
    crate::channel::ChannelEffect,
    start: crate::channel::ChannelInput::Start
);
machine!(
    crate::gpu::GpuMachine,
    crate::gpu::GpuInput,
    crate::gpu::GpuEffect,
    start: crate::gpu::GpuInput::Tick
);
machine!(
    crate::dispatch::DispatchMachine,
    crate::dispatch::DispatchInput,
    crate::dispatch::DispatchEffect,
    start: crate::dispatch::DispatchInput::Tick
);
machine!(
    crate::membership::MembershipMachine,
    crate::membership::MembershipInput,
    crate::membership::MembershipEffect,
    start: crate::membership::MembershipInput::Start
);

/// Remembers the last `now_ms` a machine saw and asserts that time only
/// moves forward (the first rule of [`Machine`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Monotonic {
    last_ms: u64,
}

impl Monotonic {
    /// Takes `now_ms`, asserting it is not before the last one.
    pub fn advance(&mut self, now_ms: u64, machine: &str) -> u64 {
        assert!(
            now_ms >= self.last_ms,
            "{machine}: time went backwards from {} to {now_ms}",
            self.last_ms
        );
        self.last_ms = now_ms;
        now_ms
    }

    /// The last time taken.
    pub fn now_ms(&self) -> u64 {
        self.last_ms
    }
}
