//! The YouTube publisher against the local YouTube emulator: uploads in
//! chunks, token refresh, resume after a cut connection, reconciliation
//! after a lost answer to the last chunk, the `may_finish` rule, quota and
//! rate-limit answers, and lookup by key. Every test audits the emulator's
//! record of completed uploads, so "published twice" or "published though
//! told not to" fails a test.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actors::protocol::{LookupOutcome, PublishOutcome};
use common::youtube_emulator::{EmulatorConfig, LostResponse, YoutubeEmulator};
use reelfleet::publish::youtube::{YoutubeConfig, YoutubePublisher};
use reelfleet::publish::{MayFinish, Publisher, Upload};
use topology::{PublishingProject, QuotaBucket, QuotaCost};

const CHUNK: usize = 64 * 1024;

/// Bytes that differ from offset to offset, so a chunk sent at the wrong
/// offset or twice cannot go unnoticed.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005) | 1;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) as u8
        })
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    video: PathBuf,
    bytes: Vec<u8>,
}

fn fixture(len: usize, seed: u64) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let video = dir.path().join("video.mp4");
    let bytes = pattern(len, seed);
    std::fs::write(&video, &bytes).expect("write video");
    Fixture {
        _dir: dir,
        video,
        bytes,
    }
}

fn upload(key: &str, f: &Fixture) -> Upload {
    Upload {
        idempotency_key: key.to_string(),
        video: f.video.clone(),
        title: format!("Soup of the day {key}"),
        description: "Leek and potato.\nFilmed in one take.".into(),
        metadata: serde_json::json!({"tags": ["soup", "cooking"]}),
    }
}

/// A `may_finish` that answers `answer` and counts how often it was asked.
fn may_finish(answer: bool) -> (MayFinish, Arc<AtomicUsize>) {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let f: MayFinish = Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        answer
    });
    (f, asked)
}

fn config(emu: &YoutubeEmulator) -> YoutubeConfig {
    YoutubeConfig {
        chunk_bytes: CHUNK,
        ..emu.publisher_config()
    }
}

fn publisher(cfg: YoutubeConfig, project: &PublishingProject) -> YoutubePublisher {
    YoutubePublisher::new(cfg, Some(project)).expect("publisher")
}

/// Chunk PUTs (with a body) the emulator saw, as their Content-Range.
fn chunk_ranges(emu: &YoutubeEmulator) -> Vec<String> {
    emu.requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.body_len > 0)
        .filter_map(|r| r.content_range)
        .collect()
}

fn status_queries(emu: &YoutubeEmulator) -> usize {
    emu.requests()
        .iter()
        .filter(|r| {
            r.method == "PUT"
                && r.content_range
                    .as_deref()
                    .is_some_and(|c| c.starts_with("bytes */"))
        })
        .count()
}

/// A project whose quota never runs out in a test, lookups from its own
/// bucket, so that the two can be told apart.
fn roomy_project() -> PublishingProject {
    PublishingProject {
        name: "roomy".into(),
        reset_utc_offset_minutes: -480,
        buckets: vec![
            QuotaBucket {
                name: "uploads".into(),
                units_per_day: 1_000,
            },
            QuotaBucket {
                name: "shared".into(),
                units_per_day: 1_000_000,
            },
        ],
        upload_cost: QuotaCost {
            bucket: 0,
            units: 1,
        },
        thumbnail_cost: None,
        lookup_cost: QuotaCost {
            bucket: 1,
            units: 1,
        },
    }
}

#[tokio::test]
async fn a_plain_upload_lands_once_with_its_key_and_is_found_by_lookup() {
    let project = PublishingProject::youtube_legacy("legacy");
    let (emu, _url) = YoutubeEmulator::start_with(EmulatorConfig {
        project: project.clone(),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let p = publisher(config(&emu), &project);
    let f = fixture(5 * CHUNK - 1234, 1);
    let (finish, asked) = may_finish(true);
    let out = p.publish(&upload("ch-0001/7", &f), finish).await;
    let Some(PublishOutcome::Published { remote_id }) = out else {
        panic!("expected Published, got {out:?} ({:?})", p.last_error());
    };

    let videos = emu.videos();
    assert_eq!(videos.len(), 1);
    let v = &videos[0];
    assert_eq!(v.id, remote_id);
    assert_eq!(v.bytes, f.bytes, "the bytes that landed are the file's");
    assert!(v.has_key("ch-0001/7"), "description: {:?}", v.description);
    assert!(v
        .description
        .starts_with("Leek and potato.\nFilmed in one take."));
    assert_eq!(v.title, "Soup of the day ch-0001/7");
    assert_eq!(v.tags, vec!["soup".to_string(), "cooking".to_string()]);
    assert_eq!(v.privacy_status, "private");
    assert_eq!(emu.uploads_for_key("ch-0001/7"), 1);
    // Five chunks, each starting where the last one ended.
    let total = f.bytes.len();
    let expected: Vec<String> = (0..5)
        .map(|i| {
            let a = i * CHUNK;
            let b = ((i + 1) * CHUNK).min(total) - 1;
            format!("bytes {a}-{b}/{total}")
        })
        .collect();
    assert_eq!(chunk_ranges(&emu), expected);
    // Asked exactly once, before the last chunk; one token for everything.
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(emu.token_requests(), 1);

    assert_eq!(
        p.lookup("ch-0001/7").await,
        LookupOutcome::Found {
            remote_id: remote_id.clone()
        }
    );
    // The uploads playlist is cached: the second lookup lists only.
    assert_eq!(
        p.lookup("ch-0001/7").await,
        LookupOutcome::Found { remote_id }
    );
    let channel_calls = emu
        .requests()
        .iter()
        .filter(|r| r.path == "/youtube/v3/channels")
        .count();
    assert_eq!(channel_calls, 1);
    // The publisher's counters agree with what the API charged:
    // 1,600 for the upload, channels + one page, then one page.
    assert_eq!(p.units_spent(), vec![("shared".to_string(), 1_603)]);
    assert_eq!(p.units_spent(), emu.units_used());
}

#[tokio::test]
async fn a_token_that_expires_mid_upload_is_refreshed_and_the_upload_lands_once() {
    let (emu, _url) = YoutubeEmulator::start().await.expect("emulator");
    let project = PublishingProject::youtube_legacy("legacy");
    let p = publisher(config(&emu), &project);
    let f = fixture(4 * CHUNK, 2);
    // Every token dies as the third chunk arrives.
    emu.expire_tokens_at_chunk(2);
    let out = p
        .publish(&upload("ch-0002/1", &f), may_finish(true).0)
        .await;
    assert!(
        matches!(out, Some(PublishOutcome::Published { .. })),
        "{out:?} {:?}",
        p.last_error()
    );
    assert_eq!(emu.rejected_tokens(), 1, "the third chunk met a dead token");
    assert_eq!(emu.token_requests(), 2, "refreshed once");
    assert_eq!(emu.uploads_for_key("ch-0002/1"), 1);
    assert_eq!(emu.videos()[0].bytes, f.bytes);
    // The rejected chunk was sent again at the same offset.
    let ranges = chunk_ranges(&emu);
    assert_eq!(ranges.len(), 5);
    assert_eq!(ranges[2], ranges[3]);
}

#[tokio::test]
async fn a_token_endpoint_refusal_is_transient_and_said_clearly() {
    let (emu, _url) = YoutubeEmulator::start().await.expect("emulator");
    emu.revoke_refresh_token();
    let project = PublishingProject::youtube_legacy("legacy");
    let p = publisher(config(&emu), &project);
    let f = fixture(1000, 3);
    let out = p
        .publish(&upload("ch-0003/1", &f), may_finish(true).0)
        .await;
    assert_eq!(out, Some(PublishOutcome::Transient));
    let why = p.last_error().expect("an error is kept");
    assert!(why.contains("invalid_grant"), "{why}");
    assert_eq!(emu.sessions_opened(), 0);
    assert!(emu.videos().is_empty());
    assert_eq!(p.lookup("ch-0003/1").await, LookupOutcome::Failed);
}

#[tokio::test]
async fn a_token_endpoint_outage_is_transient_and_passes() {
    let (emu, _url) = YoutubeEmulator::start().await.expect("emulator");
    let project = PublishingProject::youtube_legacy("legacy");
    let p = publisher(config(&emu), &project);
    let f = fixture(1000, 18);
    emu.fail_token_next(1);
    let out = p
        .publish(&upload("ch-0018/1", &f), may_finish(true).0)
        .await;
    assert_eq!(out, Some(PublishOutcome::Transient));
    assert!(p.last_error().is_some_and(|e| e.contains("503")));
    assert_eq!(emu.sessions_opened(), 0);
    // The next attempt (the machine's decision) gets a token and lands.
    let out = p
        .publish(&upload("ch-0018/1", &f), may_finish(true).0)
        .await;
    assert!(
        matches!(out, Some(PublishOutcome::Published { .. })),
        "{out:?}"
    );
    assert_eq!(emu.token_requests(), 2);
    assert_eq!(emu.uploads_for_key("ch-0018/1"), 1);
}

#[tokio::test]
async fn an_upload_resumes_from_what_the_server_holds_after_a_cut_connection() {
    let (emu, _url) = YoutubeEmulator::start().await.expect("emulator");
    let project = PublishingProject::youtube_legacy("legacy");
    let p = publisher(config(&emu), &project);
    let f = fixture(4 * CHUNK + 99, 4);
    // The second chunk is cut after 10,000 bytes, which the server keeps.
    emu.drop_chunk(1, 10_000);
    let out = p
        .publish(&upload("ch-0004/1", &f), may_finish(true).0)
        .await;
    let Some(PublishOutcome::Published { remote_id }) = out else {
        panic!("expected Published, got {out:?} ({:?})", p.last_error());
    };
    assert_eq!(emu.uploads_for_key("ch-0004/1"), 1);
    let v = &emu.videos()[0];
    assert_eq!(v.id, remote_id);
    assert_eq!(v.bytes, f.bytes, "identical bytes after the resume");
    assert_eq!(status_queries(&emu), 1);
    // It resumed at the server's offset, not at its own chunk boundary.
    let total = f.bytes.len();
    let resumed = format!("bytes {}-", CHUNK + 10_000);
    assert!(
        chunk_ranges(&emu).iter().any(|r| r.starts_with(&resumed)),
        "{:?}",
        chunk_ranges(&emu)
    );
    assert!(chunk_ranges(&emu)
        .last()
        .is_some_and(|r| r.ends_with(&format!("-{}/{total}", total - 1))));
    assert_eq!(emu.sessions_opened(), 1, "one session, resumed");
}

#[tokio::test]
async fn a_lost_answer_to_the_last_chunk_is_settled_by_a_status_query() {
    // Closed without an answer, or a 503 although the upload completed.
    for how in [LostResponse::Close, LostResponse::ServerError] {
        let (emu, _url) = YoutubeEmulator::start().await.expect("emulator");
        let project = PublishingProject::youtube_legacy("legacy");
        let p = publisher(config(&emu), &project);
        let f = fixture(3 * CHUNK, 5);
        emu.lose_final_response(how, 0);
        let out = p
            .publish(&upload("ch-0005/1", &f), may_finish(true).0)
            .await;
        let Some(PublishOutcome::Published { remote_id }) = out else {
            panic!(
                "{how:?}: expected Published, got {out:?} ({:?})",
                p.last_error()
            );
        };
        assert_eq!(emu.uploads_for_key("ch-0005/1"), 1, "{how:?}");
        assert_eq!(emu.videos()[0].id, remote_id, "{how:?}");
        assert_eq!(status_queries(&emu), 1, "{how:?}");
        assert_eq!(emu.sessions_opened(), 1, "{how:?}");
    }
}

#[tokio::test]
async fn a_server_error_mid_upload_is_resumed() {
    let (emu, _url) = YoutubeEmulator::start().await.expect("emulator");
    let project = PublishingProject::youtube_legacy("legacy");
    let p = publisher(config(&emu), &project);
    let f = fixture(4 * CHUNK, 17);
    // The third chunk is refused with a 502 and none of it is kept.
    emu.fail_chunk(2, 502);
    let out = p
        .publish(&upload("ch-0017/1", &f), may_finish(true).0)
        .await;
    assert!(
        matches!(out, Some(PublishOutcome::Published { .. })),
        "{out:?} {:?}",
        p.last_error()
    );
    assert_eq!(status_queries(&emu), 1);
    assert_eq!(emu.uploads_for_key("ch-0017/1"), 1);
    assert_eq!(emu.videos()[0].bytes, f.bytes);
    assert_eq!(emu.sessions_opened(), 1);
}

#[tokio::test]
async fn a_hung_answer_to_the_last_chunk_times_out_and_is_settled_by_a_status_query() {
    let (emu, _url) = YoutubeEmulator::start().await.expect("emulator");
    let project = PublishingProject::youtube_legacy("legacy");
    let cfg = YoutubeConfig {
        request_timeout_ms: 500,
        ..config(&emu)
    };
    let p = publisher(cfg, &project);
    let f = fixture(2 * CHUNK + 1, 6);
    emu.lose_final_response(LostResponse::Hang, 0);
    let out = p
        .publish(&upload("ch-0006/1", &f), may_finish(true).0)
        .await;
    let Some(PublishOutcome::Published { remote_id }) = out else {
        panic!("expected Published, got {out:?} ({:?})", p.last_error());
    };
    assert_eq!(emu.uploads_for_key("ch-0006/1"), 1);
    assert_eq!(emu.videos()[0].id, remote_id);
}

#[tokio::test]
async fn when_even_the_status_query_fails_the_outcome_is_unknown_and_lookup_finds_it() {
    let (emu, _url) = YoutubeEmulator::start().await.expect("emulator");
    let project = PublishingProject::youtube_legacy("legacy");
    let cfg = YoutubeConfig {
        max_resumes: 3,
        ..config(&emu)
    };
    let p = publisher(cfg, &project);
    let f = fixture(2 * CHUNK, 7);
    // The upload completes, its answer is lost, and every status query
    // after it gets a 503.
    emu.lose_final_response(LostResponse::Close, 100);
    let out = p
        .publish(&upload("ch-0007/1", &f), may_finish(true).0)
        .await;
    assert_eq!(out, None, "unknown, not a definite failure");
    assert_eq!(status_queries(&emu), 3);
    emu.clear_faults();
    // Reconciliation: the key is found, so no second publish is needed.
    let videos = emu.videos();
    assert_eq!(videos.len(), 1);
    assert_eq!(
        p.lookup("ch-0007/1").await,
        LookupOutcome::Found {
            remote_id: videos[0].id.clone()
        }
    );
    assert_eq!(emu.uploads_for_key("ch-0007/1"), 1);
    assert_eq!(emu.sessions_opened(), 1);
}

#[tokio::test]
async fn may_finish_saying_no_keeps_the_last_chunk_back_and_no_video_exists() {
    let (emu, _url) = YoutubeEmulator::start().await.expect("emulator");
    let project = PublishingProject::youtube_legacy("legacy");
    let p = publisher(config(&emu), &project);
    let f = fixture(3 * CHUNK - 5, 8);
    let (finish, asked) = may_finish(false);
    let out = p.publish(&upload("ch-0008/1", &f), finish).await;
    assert_eq!(out, Some(PublishOutcome::Transient));
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert!(emu.videos().is_empty());
    assert_eq!(emu.uploads_for_key("ch-0008/1"), 0);
    // The first two chunks went; the one with the last byte never did.
    let total = f.bytes.len();
    let ranges = chunk_ranges(&emu);
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert!(ranges
        .iter()
        .all(|r| !r.ends_with(&format!("-{}/{total}", total - 1))));
    assert_eq!(p.lookup("ch-0008/1").await, LookupOutcome::NotFound);
}

#[tokio::test]
async fn an_exhausted_quota_is_quota_exceeded() {
    // The API's own accounting: one upload a day.
    let mut project = roomy_project();
    project.buckets[0].units_per_day = 1;
    let (emu, _url) = YoutubeEmulator::start_with(EmulatorConfig {
        project: project.clone(),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let p = publisher(config(&emu), &project);
    let f = fixture(1000, 9);
    let first = p
        .publish(&upload("ch-0009/1", &f), may_finish(true).0)
        .await;
    assert!(
        matches!(first, Some(PublishOutcome::Published { .. })),
        "{first:?}"
    );
    let second = p
        .publish(&upload("ch-0009/2", &f), may_finish(true).0)
        .await;
    assert_eq!(second, Some(PublishOutcome::QuotaExceeded));
    assert_eq!(emu.uploads_for_key("ch-0009/2"), 0);
    // Only the upload that opened a session was counted.
    assert_eq!(
        p.units_spent(),
        vec![("uploads".to_string(), 1), ("shared".to_string(), 0)]
    );
    // A new quota day; then the switch that exhausts it outright.
    emu.reset_quota_day();
    let third = p
        .publish(&upload("ch-0009/2", &f), may_finish(true).0)
        .await;
    assert!(
        matches!(third, Some(PublishOutcome::Published { .. })),
        "{third:?}"
    );
    emu.reset_quota_day();
    emu.set_quota_exhausted(true);
    let fourth = p
        .publish(&upload("ch-0009/3", &f), may_finish(true).0)
        .await;
    assert_eq!(fourth, Some(PublishOutcome::QuotaExceeded));
    assert_eq!(emu.videos().len(), 2);
}

#[tokio::test]
async fn rate_limits_are_rate_limited_with_the_servers_retry_after() {
    let (emu, _url) = YoutubeEmulator::start().await.expect("emulator");
    let project = PublishingProject::youtube_legacy("legacy");
    let p = publisher(config(&emu), &project);
    let f = fixture(1000, 10);
    emu.rate_limit_next(1, Some(17));
    let out = p
        .publish(&upload("ch-0010/1", &f), may_finish(true).0)
        .await;
    assert_eq!(
        out,
        Some(PublishOutcome::RateLimited {
            retry_after_ms: 17_000
        })
    );
    emu.rate_limit_next(1, None);
    let out = p
        .publish(&upload("ch-0010/1", &f), may_finish(true).0)
        .await;
    assert_eq!(
        out,
        Some(PublishOutcome::RateLimited {
            retry_after_ms: 60_000
        })
    );
    emu.user_rate_limit_next(1);
    let out = p
        .publish(&upload("ch-0010/1", &f), may_finish(true).0)
        .await;
    assert!(
        matches!(out, Some(PublishOutcome::RateLimited { .. })),
        "{out:?}"
    );
    assert!(emu.videos().is_empty());
    assert_eq!(emu.sessions_opened(), 0);
}

#[tokio::test]
async fn a_server_error_on_init_is_transient() {
    let (emu, _url) = YoutubeEmulator::start().await.expect("emulator");
    let project = PublishingProject::youtube_legacy("legacy");
    let p = publisher(config(&emu), &project);
    let f = fixture(3 * CHUNK, 11);
    emu.fail_next(1, 503);
    let out = p
        .publish(&upload("ch-0011/1", &f), may_finish(true).0)
        .await;
    assert_eq!(out, Some(PublishOutcome::Transient));
    assert!(emu.videos().is_empty());
    assert_eq!(emu.sessions_opened(), 0);
    assert!(
        chunk_ranges(&emu).is_empty(),
        "no chunk after a failed init"
    );
    assert_eq!(p.units_spent(), vec![("shared".to_string(), 0)]);
}

#[tokio::test]
async fn a_forgotten_session_is_transient() {
    let (emu, _url) = YoutubeEmulator::start().await.expect("emulator");
    let project = PublishingProject::youtube_legacy("legacy");
    let f = fixture(3 * CHUNK, 12);
    // Cut the second chunk; the session is then forgotten before the
    // publisher asks it what it holds (its first backoff is 10 ms).
    emu.drop_chunk(1, 100);
    let cfg = YoutubeConfig {
        resume_backoff_ms: 300,
        ..config(&emu)
    };
    let p = publisher(cfg, &project);
    let u = upload("ch-0012/1", &f);
    let run = p.publish(&u, may_finish(true).0);
    let forget = async {
        while chunk_ranges(&emu).len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        emu.forget_sessions();
    };
    let (out, ()) = tokio::join!(run, forget);
    assert_eq!(out, Some(PublishOutcome::Transient), "{:?}", p.last_error());
    assert!(emu.videos().is_empty());
}

#[tokio::test]
async fn lookup_pages_newest_first_and_matches_only_the_exact_key() {
    let project = roomy_project();
    let (emu, _url) = YoutubeEmulator::start_with(EmulatorConfig {
        project: project.clone(),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let p = publisher(config(&emu), &project);
    let f = fixture(64, 13);
    // 60 uploads: the first lands on the second page of 50.
    let mut ids = Vec::new();
    for i in 0..60 {
        let key = format!("ch-0013/{i}");
        match p.publish(&upload(&key, &f), may_finish(true).0).await {
            Some(PublishOutcome::Published { remote_id }) => ids.push(remote_id),
            other => panic!("{key}: {other:?} {:?}", p.last_error()),
        }
    }
    assert_eq!(
        p.lookup("ch-0013/0").await,
        LookupOutcome::Found {
            remote_id: ids[0].clone()
        }
    );
    assert_eq!(
        p.lookup("ch-0013/59").await,
        LookupOutcome::Found {
            remote_id: ids[59].clone()
        }
    );
    // "ch-0013/5" is a prefix of "ch-0013/50..59" but is its own video.
    assert_eq!(
        p.lookup("ch-0013/5").await,
        LookupOutcome::Found {
            remote_id: ids[5].clone()
        }
    );
    assert_eq!(p.lookup("ch-0013/60").await, LookupOutcome::NotFound);
    assert_eq!(p.lookup("ch-0013").await, LookupOutcome::NotFound);
    // A scan limited to one page does not reach the oldest upload.
    let shallow = publisher(
        YoutubeConfig {
            lookup_max_pages: 1,
            ..config(&emu)
        },
        &project,
    );
    assert_eq!(shallow.lookup("ch-0013/0").await, LookupOutcome::NotFound);
    assert_eq!(
        shallow.lookup("ch-0013/10").await,
        LookupOutcome::Found {
            remote_id: ids[10].clone()
        }
    );
}

#[tokio::test]
async fn lookup_of_an_unknown_key_is_not_found() {
    let (emu, _url) = YoutubeEmulator::start().await.expect("emulator");
    let project = PublishingProject::youtube_legacy("legacy");
    let p = publisher(config(&emu), &project);
    let f = fixture(100, 14);
    let out = p
        .publish(&upload("ch-0014/10", &f), may_finish(true).0)
        .await;
    assert!(
        matches!(out, Some(PublishOutcome::Published { .. })),
        "{out:?}"
    );
    assert_eq!(p.lookup("ch-0014/1").await, LookupOutcome::NotFound);
    assert_eq!(p.lookup("never-uploaded").await, LookupOutcome::NotFound);
    assert!(matches!(
        p.lookup("ch-0014/10").await,
        LookupOutcome::Found { .. }
    ));
}

#[tokio::test]
async fn lookup_against_a_stopped_emulator_fails() {
    let (emu, _url) = YoutubeEmulator::start().await.expect("emulator");
    let project = PublishingProject::youtube_legacy("legacy");
    let p = publisher(config(&emu), &project);
    // Warm the token and the connection pool first, so that the failure
    // comes from the API calls themselves.
    let f = fixture(100, 15);
    let out = p
        .publish(&upload("ch-0015/1", &f), may_finish(true).0)
        .await;
    assert!(
        matches!(out, Some(PublishOutcome::Published { .. })),
        "{out:?}"
    );
    emu.stop().await;
    assert_eq!(p.lookup("ch-0015/1").await, LookupOutcome::Failed);
    assert!(p.last_error().is_some_and(|e| e.contains("lookup")));
    let out = p
        .publish(&upload("ch-0015/2", &f), may_finish(true).0)
        .await;
    assert_eq!(out, Some(PublishOutcome::Transient));
}

#[tokio::test]
async fn the_emulator_holds_to_the_resumable_protocol() {
    let (emu, url) = YoutubeEmulator::start().await.expect("emulator");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let cfg = emu.publisher_config();
    let token: serde_json::Value = token_request(&http, &cfg, &cfg.client_secret)
        .await
        .json()
        .await
        .expect("token json");
    let token = token["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let session = open_upload_session(&http, &url, &token).await;
    send_twenty_bytes_in_two_chunks(&http, &session, &token, &emu).await;
    // A session that does not exist is 404.
    let r = http
        .put(format!(
            "{url}/upload/youtube/v3/videos?uploadType=resumable&upload_id=nope"
        ))
        .bearer_auth(&token)
        .header("Content-Range", "bytes */20")
        .body(Vec::new())
        .send()
        .await
        .expect("status");
    assert_eq!(r.status().as_u16(), 404);
    // Wrong client secret: invalid_client.
    let r = token_request(&http, &cfg, "wrong").await;
    assert_eq!(r.status().as_u16(), 401);
}

/// A refresh-token grant to the emulator's token endpoint.
async fn token_request(
    http: &reqwest::Client,
    cfg: &YoutubeConfig,
    client_secret: &str,
) -> reqwest::Response {
    http.post(&cfg.token_url)
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", cfg.client_id.as_str()),
            ("client_secret", client_secret),
            ("refresh_token", cfg.refresh_token.as_str()),
        ])
        .send()
        .await
        .expect("token")
}

/// Opens a resumable session for 20 bytes, after checking that one is
/// refused without a token or with a bad title; the session's URL.
async fn open_upload_session(http: &reqwest::Client, url: &str, token: &str) -> String {
    // No token, no session.
    let init_url =
        format!("{url}/upload/youtube/v3/videos?uploadType=resumable&part=snippet,status");
    let meta = serde_json::json!({"snippet": {"title": "t", "description": "d"}, "status": {"privacyStatus": "private"}});
    let r = http.post(&init_url).json(&meta).send().await.expect("init");
    assert_eq!(r.status().as_u16(), 401);
    // A title with '<' is refused, as YouTube does.
    let bad = serde_json::json!({"snippet": {"title": "a<b"}});
    let r = http
        .post(&init_url)
        .bearer_auth(token)
        .json(&bad)
        .send()
        .await
        .expect("init");
    assert_eq!(r.status().as_u16(), 400);
    let r = http
        .post(&init_url)
        .bearer_auth(token)
        .header("X-Upload-Content-Length", "20")
        .header("X-Upload-Content-Type", "video/*")
        .json(&meta)
        .send()
        .await
        .expect("init");
    assert_eq!(r.status().as_u16(), 200);
    let session = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_string();
    assert!(session.starts_with(url), "{session}");
    session
}

/// Sends the session's 20 bytes as two chunks of 10, with a status query
/// and refused chunks on the way; exactly one video must come of it.
async fn send_twenty_bytes_in_two_chunks(
    http: &reqwest::Client,
    session: &str,
    token: &str,
    emu: &YoutubeEmulator,
) {
    let put = |range: &str, body: Vec<u8>| {
        http.put(session)
            .bearer_auth(token)
            .header("Content-Range", range.to_string())
            .body(body)
            .send()
    };
    // Nothing held yet: 308 without Range.
    let r = put("bytes */20", Vec::new()).await.expect("status");
    assert_eq!(r.status().as_u16(), 308);
    assert!(r.headers().get("range").is_none());
    // A chunk that does not start where the session ends is refused.
    let r = put("bytes 10-19/20", vec![1; 10]).await.expect("chunk");
    assert_eq!(r.status().as_u16(), 400);
    // A body that does not match its Content-Range is refused.
    let r = put("bytes 0-9/20", vec![1; 9]).await.expect("chunk");
    assert_eq!(r.status().as_u16(), 400);
    let r = put("bytes 0-9/20", vec![1; 10]).await.expect("chunk");
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(
        r.headers().get("range").and_then(|v| v.to_str().ok()),
        Some("bytes=0-9")
    );
    assert!(emu.videos().is_empty());
    let r = put("bytes 10-19/20", vec![2; 10]).await.expect("chunk");
    assert_eq!(r.status().as_u16(), 200);
    let video: serde_json::Value = r.json().await.expect("video json");
    assert_eq!(video["kind"], "youtube#video");
    let id = video["id"].as_str().expect("id").to_string();
    // A finished session answers every later PUT with the same video.
    let r = put("bytes */20", Vec::new()).await.expect("status");
    assert_eq!(r.status().as_u16(), 200);
    let again: serde_json::Value = r.json().await.expect("video json");
    assert_eq!(again["id"].as_str(), Some(id.as_str()));
    let videos = emu.videos();
    assert_eq!(videos.len(), 1);
    assert_eq!(videos[0].bytes, [vec![1; 10], vec![2; 10]].concat());
}

#[test]
fn the_emulator_runs_on_its_own_thread_for_sync_tests() {
    let (emu, url) = YoutubeEmulator::start_on_thread().expect("emulator");
    let project = PublishingProject::youtube_legacy("legacy");
    let p = publisher(config(&emu), &project);
    let f = fixture(2 * CHUNK + 3, 16);
    // A runtime of the test's own, unrelated to the emulator's.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(p.publish(&upload("ch-0016/1", &f), may_finish(true).0));
    assert!(
        matches!(out, Some(PublishOutcome::Published { .. })),
        "{out:?}"
    );
    assert_eq!(emu.uploads_for_key("ch-0016/1"), 1);
    assert_eq!(emu.videos()[0].bytes, f.bytes);
    let addr = url.trim_start_matches("http://").to_string();
    drop(emu);
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the port closes when the emulator is dropped"
    );
}
