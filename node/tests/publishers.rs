//! The directory publisher: atomic, idempotent by key, found by lookup.

use reelfleet::publish::directory::{folder_name, DirectoryPublisher};

#[test]
fn publishing_is_atomic_idempotent_and_found_by_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let video = dir.path().join("clip.mp4");
    std::fs::write(&video, b"not really an mp4").expect("video");
    let p = DirectoryPublisher::new(dir.path().join("published")).expect("publisher");
    assert_eq!(p.lookup("ch-0001/42").expect("lookup"), None);
    let id = p
        .publish("ch-0001/42", &video, serde_json::json!({"title": "Soup"}))
        .expect("publish");
    assert_eq!(p.lookup("ch-0001/42").expect("lookup"), Some(id.clone()));
    // Again: same id, nothing rewritten.
    std::fs::write(&video, b"something else").expect("video");
    assert_eq!(
        p.publish("ch-0001/42", &video, serde_json::json!({}))
            .expect("again"),
        id
    );
    let folder = dir.path().join("published").join(folder_name("ch-0001/42"));
    assert_eq!(
        std::fs::read(folder.join("clip.mp4")).expect("copy"),
        b"not really an mp4"
    );
    // Distinct keys never share a folder, and no temporary folder is left.
    assert_ne!(folder_name("a/b"), folder_name("a%2Fb"));
    let names: Vec<String> = std::fs::read_dir(dir.path().join("published"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != reelfleet::publish::directory::PUBLISH_LOG)
        .collect();
    assert_eq!(names, vec![folder_name("ch-0001/42")]);
    // The audit trail has the one publish, not the idempotent repeat.
    let log = std::fs::read_to_string(
        dir.path()
            .join("published")
            .join(reelfleet::publish::directory::PUBLISH_LOG),
    )
    .expect("publish log");
    assert_eq!(log.lines().count(), 1, "{log}");
}

#[test]
fn a_half_written_upload_is_not_a_video() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = DirectoryPublisher::new(dir.path()).expect("publisher");
    // A crash mid-publish leaves only an incoming folder: lookups ignore it.
    std::fs::create_dir_all(
        dir.path()
            .join(format!(".incoming-{}-1", folder_name("k/1"))),
    )
    .expect("tmp");
    assert_eq!(p.lookup("k/1").expect("lookup"), None);
    let video = dir.path().join("v.bin");
    std::fs::write(&video, b"x").expect("video");
    assert!(p.publish("k/1", &video, serde_json::json!({})).is_ok());
}
