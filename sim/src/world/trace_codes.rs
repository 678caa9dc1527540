//! How events are named and numbered in the trace (and so in its hash).

use actors::node::{Local, NodeMsg};
use actors::store::StoreOp;

use super::events::{Actor, Msg};
use crate::scenario::Fault;

pub(super) fn actor_code(a: Actor) -> u64 {
    match a {
        Actor::Membership => 0,
        Actor::Channel(ch, _) => 1 + u64::from(ch.0),
        Actor::Gpu(i) => 1_000_000 + i as u64,
        Actor::Dispatcher => 2_000_000,
    }
}

pub(super) fn msg_name(m: &Msg) -> &'static str {
    match m {
        Msg::Local(Local::Membership(_)) => "to-membership",
        Msg::Local(Local::Channel(..) | Local::EachChannel(_)) | Msg::ChannelGen(..) => {
            "to-channel"
        }
        Msg::Local(Local::Gpu(..)) => "to-gpu",
        Msg::Local(Local::Dispatcher(_)) => "to-dispatcher",
        Msg::Net(n) => n.name(),
    }
}

pub(super) fn msg_code(m: &Msg) -> u64 {
    match m {
        Msg::Local(Local::Channel(ch, _)) | Msg::ChannelGen(ch, _, _) => u64::from(ch.0),
        Msg::Local(Local::Gpu(g, _)) => u64::from(g.0),
        Msg::Net(NodeMsg::JobStarted { id, .. } | NodeMsg::JobFinished { id, .. }) => {
            u64::from(id.channel.0)
        }
        Msg::Net(NodeMsg::GpuSubmit { gpu, .. } | NodeMsg::GpuCancel { gpu, .. }) => {
            u64::from(gpu.0)
        }
        _ => 0,
    }
}

pub(super) fn store_op_code(op: &StoreOp) -> u64 {
    match op {
        StoreOp::Get(k) => k.len() as u64,
        StoreOp::Range { limit, .. } => *limit as u64,
        StoreOp::Commit(t) => 1_000 + t.writes.len() as u64,
        StoreOp::CommitGet { txn, keys } => {
            2_000 + 100 * txn.writes.len() as u64 + keys.len() as u64
        }
    }
}

pub(super) fn fault_code(f: &Fault) -> u64 {
    match f {
        Fault::CrashNode(n)
        | Fault::StartNode(n)
        | Fault::DrainNode(n)
        | Fault::FreezeNode(n)
        | Fault::ThawNode(n) => u64::from(n.0),
        Fault::PartitionRegion(r) | Fault::HealRegion(r) => u64::from(r.0),
        _ => 0,
    }
}
