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

pub use actors::machine::Machine;

use super::clock::Clock;
use crate::record::Tape;

/// Executes one machine's effects against real ports: each effect goes to
/// the node layer's routing and its routes are carried out (see `ports`).
pub trait Ports<M: Machine>: Send + Sync + 'static {
    fn execute(&self, me: &Mailbox<M::Input>, effect: M::Effect);
    /// The actor is stopping (fenced, released, failed): drop its work.
    fn stopped(&self) {}
    /// After each input: a look at the machine's state for metrics (read
    /// only; nothing is decided here).
    fn observe(&self, _machine: &M) {}
}

/// Where a machine's later inputs go: its own actor, or in tests whatever
/// records them. Results of I/O come back through it.
pub struct Mailbox<I> {
    send: Arc<dyn Fn(ShellMsg<I>) + Send + Sync>,
}

impl<I> Clone for Mailbox<I> {
    fn clone(&self) -> Self {
        Mailbox {
            send: Arc::clone(&self.send),
        }
    }
}

impl<I: Send + 'static> Mailbox<I> {
    /// The mailbox of a running shell.
    pub fn of(actor: ActorRef<ShellMsg<I>>) -> Mailbox<I> {
        Mailbox::from_fn(move |m| {
            // A stopped actor takes nothing: the input is one its machine
            // no longer needs.
            let _ = actor.cast(m);
        })
    }

    pub fn from_fn(f: impl Fn(ShellMsg<I>) + Send + Sync + 'static) -> Mailbox<I> {
        Mailbox { send: Arc::new(f) }
    }

    pub fn post(&self, input: I) {
        (self.send)(ShellMsg::Input(input));
    }

    /// Makes the machine's actor fail now, as a crashing machine would.
    pub fn fail(&self, why: &str) {
        (self.send)(ShellMsg::Fail(why.to_string()));
    }
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
    /// The machine's part of the flight recording, when the node records.
    pub tape: Option<Tape>,
}

pub struct ShellState<M: Machine, P> {
    machine: M,
    ports: Arc<P>,
    clock: Clock,
    mailbox: Mailbox<M::Input>,
    out: Vec<M::Effect>,
    timer_gen: u64,
    timer: Option<(u64, tokio::task::JoinHandle<()>)>,
    tape: Option<Tape>,
}

impl<M, P> ShellState<M, P>
where
    M: Machine + Send + 'static,
    M::Input: Send + serde::Serialize + 'static,
    M::Effect: Send + serde::Serialize + 'static,
    P: Ports<M>,
{
    fn feed(&mut self, me: &ActorRef<ShellMsg<M::Input>>, input: M::Input) {
        let now = self.clock.now_ms();
        if let Some(t) = self.tape.as_mut() {
            t.before(now, &input);
        }
        self.machine.handle(now, input, &mut self.out);
        if let Some(t) = self.tape.as_mut() {
            t.after(&self.out);
        }
        self.ports.observe(&self.machine);
        let effects = std::mem::take(&mut self.out);
        for e in effects {
            self.ports.execute(&self.mailbox, e);
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

impl<M, P> Actor for Shell<M, P>
where
    M: Machine + Send + 'static,
    M::Input: Send + serde::Serialize + 'static,
    M::Effect: Send + serde::Serialize + 'static,
    P: Ports<M>,
{
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
            mailbox: Mailbox::of(myself.clone()),
            out: Vec::new(),
            timer_gen: 0,
            timer: None,
            tape: args.tape,
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
pub async fn spawn_linked<M, P>(
    machine: M,
    ports: Arc<P>,
    clock: Clock,
    tape: Option<Tape>,
    supervisor: &ractor::ActorCell,
) -> Result<ActorRef<ShellMsg<M::Input>>, ActorProcessingErr>
where
    M: Machine + Send + 'static,
    M::Input: Send + serde::Serialize + 'static,
    M::Effect: Send + serde::Serialize + 'static,
    P: Ports<M>,
{
    let args = ShellArgs {
        machine,
        ports,
        clock,
        tape,
    };
    let (r, _) =
        Actor::spawn_linked(None, Shell::<M, P>::default(), args, supervisor.clone()).await?;
    Ok(r)
}
