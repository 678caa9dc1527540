//! A run that starts from a state that already exists (what `reelfleet sim
//! --from-recording` does with a flight recording's store): here, the
//! store another run ended with. The second run goes on from it: it
//! publishes the videos still to come, publishes none of the first run's
//! again (the simulated API knows them, so a second upload of one would
//! break invariant 1), and keeps every invariant, its ledgers checked
//! from the state it started from.

use actors::store::Entry;
use sim::trace::Trace;
use sim::world::World;

#[test]
fn a_run_from_another_run_s_store_goes_on_from_it() {
    let seed = 3;
    let first = sim::scenarios::builtin("node-kill", seed).expect("scenario");
    let mut w = World::new(first.clone(), seed, Trace::new(None));
    w.run();
    assert!(w.violation.is_none(), "{:?}", w.violation);
    let published_before = w.api.uploads.len();
    assert!(published_before > 0);
    let entries: Vec<Entry> = w
        .store
        .scan(b"", &[])
        .map(|(k, v, version)| Entry {
            key: k,
            value: v.clone(),
            version,
        })
        .collect();

    let mut second = first;
    second.start_utc_ms = w.now_ms;
    let summary = sim::run_from(second.clone(), seed + 1, None, entries.clone());
    assert!(summary.ok, "{}", summary.to_text());
    assert!(summary.videos_published > 0, "{}", summary.to_text());

    // The same state through the world: the API starts knowing every
    // video the store says was published.
    let mut w2 = World::new(second, seed + 1, Trace::new(None));
    w2.seed_state(entries);
    assert_eq!(w2.api.uploads.len(), published_before);
    w2.run();
    assert!(w2.violation.is_none(), "{:?}", w2.violation);
    assert!(w2.api.uploads.len() > published_before);
    assert!(w2.api.duplicates.is_empty(), "{:?}", w2.api.duplicates);
}
