//! The one generic shell: a ractor actor that runs any machine of `actors/`.
//!
//! It is the live counterpart of the simulator's `deliver`: feed an input,
//! collect the effects, hand each to the machine's [`Ports`] (which do the
//! I/O and come back later with results as inputs), then arm one timer for
//! the machine's next deadline. A timer superseded by a later deadline is
//! ignored by generation, as the simulator ignores superseded ticks.
//!
//! A panic in a machine fails the actor; its supervisor decides whether to
//! restart it (the machine reloads from the store) or escalate.

use std::marker::PhantomData;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use actors::channel::{ChannelEffect, ChannelInput, ChannelMachine};
use actors::gpu::{GpuEffect, GpuInput, GpuMachine};
use actors::membership::{MembershipEffect, MembershipInput, MembershipMachine};
use actors::dispatch::{DispatchEffect, DispatchInput, DispatchMachine};

use super::clock::Clock;

/// What the shell needs of a machine.
pub trait Machine: Send + 'static {
    type Input: Send + 'static;
    type Effect: Send + 'static;
    /// The input that begins the machine (load from the store, first tick).
    fn start_input() -> Self::Input;
    fn tick_input() -> Self::Input;
    fn handle(&mut self, now_ms: u64, input: Self::Input, out: &mut Vec<Self::Effect>);
    fn next_deadline(&self) -> Option<u64>;
}

/// Executes one machine's effects against real ports.
pub trait Ports<M: Machine>: Send + Sync + 'static {
    /// Called before each input (shared node state the machine reads).
    fn before_input(&self, _machine: &mut M) {}
    fn execute(&self, me: &ActorRef<ShellMsg<M::Input>>, machine: &M, effect: M::Effect);
    /// The actor is stopping (fenced, released, failed): drop its work.
    fn stopped(&self) {}
}

pub enum ShellMsg<I> {
    Input(I),
    /// The timer armed with this generation fired.
    Tick(u64),
    /// Fail now, as a crashing machine would (fault injection for tests and
    /// the chaos runner): the supervisor's restart policy takes over.
    Fail(String),
}

pub struct Shell<M, P>(PhantomData<fn() -> (M, P)>);

impl<M, P> Default for Shell<M, P> {
    fn default() -> Self {
        Shell(PhantomData)
    }
}

pub struct ShellArgs<M, P> {
    pub machine: M,
    pub ports: Arc<P>,
    pub clock: Clock,
}

pub struct ShellState<M: Machine, P> {
    machine: M,
    ports: Arc<P>,
    clock: Clock,
    out: Vec<M::Effect>,
    timer_gen: u64,
    timer: Option<(u64, tokio::task::JoinHandle<()>)>,
}

impl<M: Machine, P: Ports<M>> ShellState<M, P> {
    fn feed(&mut self, me: &ActorRef<ShellMsg<M::Input>>, input: M::Input) {
        self.ports.before_input(&mut self.machine);
        let now = self.clock.now_ms();
        self.machine.handle(now, input, &mut self.out);
        let effects = std::mem::take(&mut self.out);
        for e in effects {
            self.ports.execute(me, &self.machine, e);
        }
        self.arm(me);
    }

    fn arm(&mut self, me: &ActorRef<ShellMsg<M::Input>>) {
        let Some(deadline) = self.machine.next_deadline() else {
            return;
        };
        if self.timer.as_ref().is_some_and(|(d, _)| *d == deadline) {
            return;
        }
        if let Some((_, h)) = self.timer.take() {
            h.abort();
        }
        self.timer_gen += 1;
        let gen = self.timer_gen;
        let wait = self.clock.until(deadline);
        let me = me.clone();
        let h = tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = me.cast(ShellMsg::Tick(gen));
        });
        self.timer = Some((deadline, h));
    }
}

impl<M: Machine, P: Ports<M>> Actor for Shell<M, P> {
    type Msg = ShellMsg<M::Input>;
    type State = ShellState<M, P>;
    type Arguments = ShellArgs<M, P>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // The first input goes through the mailbox, so that a machine that
        // panics on it fails as a running actor (supervised), not as a
        // failed spawn.
        myself.cast(ShellMsg::Input(M::start_input()))?;
        Ok(ShellState {
            machine: args.machine,
            ports: args.ports,
            clock: args.clock,
            out: Vec::new(),
            timer_gen: 0,
            timer: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShellMsg::Input(input) => state.feed(&myself, input),
            ShellMsg::Tick(gen) => {
                if gen == state.timer_gen {
                    state.timer = None;
                    state.feed(&myself, M::tick_input());
                }
            }
            ShellMsg::Fail(why) => return Err(why.into()),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((_, h)) = state.timer.take() {
            h.abort();
        }
        state.ports.stopped();
        Ok(())
    }
}

/// Starts a shell for `machine` under `supervisor`.
pub async fn spawn_linked<M: Machine, P: Ports<M>>(
    machine: M,
    ports: Arc<P>,
    clock: Clock,
    supervisor: &ractor::ActorCell,
) -> Result<ActorRef<ShellMsg<M::Input>>, ActorProcessingErr> {
    let args = ShellArgs {
        machine,
        ports,
        clock,
    };
    let (r, _) =
        Actor::spawn_linked(None, Shell::<M, P>::default(), args, supervisor.clone()).await?;
    Ok(r)
}

macro_rules! machine {
    ($m:ty, $i:ty, $e:ty, $start:expr) => {
        impl Machine for $m {
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
    ChannelMachine,
    ChannelInput,
    ChannelEffect,
    ChannelInput::Start
);
machine!(GpuMachine, GpuInput, GpuEffect, GpuInput::Tick);
machine!(DispatchMachine, DispatchInput, DispatchEffect, DispatchInput::Tick);
machine!(
    MembershipMachine,
    MembershipInput,
    MembershipEffect,
    MembershipInput::Start
);
