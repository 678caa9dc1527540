//! Messages between machines, for real: the node's view (as the node layer
//! keeps it), the table of this node's machines, and the way out to other
//! nodes. A [`Route::Local`] goes straight to the machine's mailbox, a
//! [`Route::Remote`] to the [`Outbox`] (QUIC); a frame that arrives goes
//! through the node layer's `arrive` to a local machine. A message for a
//! machine that is not (or no longer) here is dropped: every one of them
//! is a message its sender resends or times out on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use ractor::ActorId;

use actors::channel::ChannelInput;
use actors::dispatch::DispatchInput;
use actors::gpu::GpuInput;
use actors::membership::MembershipInput;
use actors::node::{route, Local, NodeMsg, NodeView, Route};
use topology::{ChannelId, GpuId, NodeId, Topology};

use super::clock::Clock;
use super::lock;
use super::report::FleetControl;
use super::shell::Mailbox;
use super::transport::Transport;

/// The way to other nodes.
pub trait Outbox: Send + Sync {
    fn send(&self, to: NodeId, msg: &NodeMsg);
}

/// QUIC with mutual TLS: peers by name.
pub struct QuicOutbox {
    pub topo: Arc<Topology>,
    pub net: Arc<Transport>,
}

impl Outbox for QuicOutbox {
    fn send(&self, to: NodeId, msg: &NodeMsg) {
        if let Some(peer) = self.topo.nodes.get(to.index()) {
            self.net.send(&peer.name, msg);
        }
    }
}

/// One machine this node runs: its actor and its mailbox.
pub struct Hosted<I> {
    pub id: ActorId,
    pub mailbox: Mailbox<I>,
}

impl<I> Clone for Hosted<I> {
    fn clone(&self) -> Self {
        Hosted {
            id: self.id,
            mailbox: self.mailbox.clone(),
        }
    }
}

/// This node's machines.
#[derive(Default)]
pub struct Locals {
    /// Hosted channels: the epoch each runs under, and its machine.
    pub channels: BTreeMap<ChannelId, (u64, Hosted<ChannelInput>)>,
    pub gpus: BTreeMap<GpuId, Hosted<GpuInput>>,
    pub dispatcher: Option<Hosted<DispatchInput>>,
    pub membership: Option<Hosted<MembershipInput>>,
}

pub struct Router {
    view: RwLock<NodeView>,
    locals: Mutex<Locals>,
    outbox: Arc<dyn Outbox>,
    /// The fleet control last handed to every channel here (for reports).
    pub fleet_control: FleetControl,
}

impl Router {
    pub fn new(view: NodeView, outbox: Arc<dyn Outbox>, clock: Clock) -> Router {
        Router {
            view: RwLock::new(view),
            locals: Mutex::new(Locals::default()),
            outbox,
            fleet_control: FleetControl::new(clock),
        }
    }

    /// The view now (a copy: routing reads it without holding a lock).
    pub fn view(&self) -> NodeView {
        match self.view.read() {
            Ok(v) => v.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Changes the view (only the membership machine's routing does).
    pub fn update_view<R>(&self, f: impl FnOnce(&mut NodeView) -> R) -> R {
        match self.view.write() {
            Ok(mut v) => f(&mut v),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    pub fn locals(&self) -> std::sync::MutexGuard<'_, Locals> {
        lock(&self.locals)
    }

    /// Carries out a message route; hands any other route back.
    pub fn carry(&self, r: Route) -> Option<Route> {
        match r {
            Route::Local(local) => self.deliver(local),
            Route::Remote { to, msg } => self.outbox.send(to, &msg),
            other => return Some(other),
        }
        None
    }

    /// A frame arrived from another node.
    pub fn arrive(&self, msg: NodeMsg) {
        let local = route::arrive(&self.view(), msg);
        if let Some(local) = local {
            self.deliver(local);
        }
    }

    /// Hands `local` to the machine it is for, if this node runs it.
    pub fn deliver(&self, local: Local) {
        let l = self.locals();
        match local {
            Local::Membership(input) => {
                if let Some(m) = &l.membership {
                    m.mailbox.post(input);
                }
            }
            Local::Channel(ch, input) => {
                if let Some((_, c)) = l.channels.get(&ch) {
                    c.mailbox.post(input);
                }
            }
            Local::EachChannel(input) => {
                for (_, c) in l.channels.values() {
                    c.mailbox.post(input.clone());
                }
                // Channels that start later read the record themselves.
                if let ChannelInput::ControlAll { record, version } = input {
                    self.fleet_control.applied(record, version);
                }
            }
            Local::Gpu(g, input) => {
                if let Some(h) = l.gpus.get(&g) {
                    h.mailbox.post(input);
                }
            }
            Local::Dispatcher(input) => {
                if let Some(d) = &l.dispatcher {
                    d.mailbox.post(input);
                }
            }
        }
    }

    /// Whether `channel` runs here under `epoch`.
    pub fn hosts(&self, channel: ChannelId, epoch: u64) -> bool {
        self.locals()
            .channels
            .get(&channel)
            .is_some_and(|(e, _)| *e == epoch)
    }
}
