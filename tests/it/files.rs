//! Files between the phone and the agent, end to end: the real binary, the
//! simulator's `getFile` and downloads, the test agent (which echoes its
//! prompt, so the prompt names the saved paths).

use std::path::PathBuf;

use telegram_sim::{DOWNLOAD, Fault, FaultKind, FileKind, IncomingFile, IncomingMessage};

use agentlab_testkit::service::start_sim;

use crate::harness::{Options, Service};

const USER: i64 = 111;

/// The paths after `marker` in the agent's echoed prompt, one per line.
fn paths_after(answer: &str, marker: &str) -> Vec<PathBuf> {
    answer
        .lines()
        .filter_map(|line| line.split_once(marker))
        .map(|(_, path)| PathBuf::from(path.trim()))
        .collect()
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_photo_with_a_caption_reaches_the_agent_as_a_file_with_the_same_bytes() {
    let service = Service::start(Options::default()).await;
    let sent = bytes(5000, 7);
    let photo = IncomingFile::new(FileKind::Photo, sent.clone()).captioned("What is wrong here?");
    service.send_message(0, &IncomingMessage::file(USER, USER, photo));
    let answer = service
        .wait_for_message(0, USER, |t| t.contains("Attached image: "))
        .await;
    assert!(answer.contains("What is wrong here?"), "{answer}");
    let paths = paths_after(&answer, "Attached image: ");
    assert_eq!(paths.len(), 1, "{answer}");
    let inbox = service.dir.path().join(".agentlab").join("inbox");
    assert!(paths[0].starts_with(&inbox), "{paths:?} not in {inbox:?}");
    assert_eq!(
        std::fs::read(&paths[0]).expect("saved file"),
        sent,
        "the largest size, whole"
    );
    let messages = service.messages_to(0, USER);
    assert!(
        messages
            .iter()
            .any(|t| t.starts_with("⏳ Queued as task #")),
        "{messages:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_document_keeps_a_safe_name_and_its_bytes() {
    let service = Service::start(Options::default()).await;
    let sent = bytes(3000, 42);
    let document = IncomingFile::new(FileKind::Document, sent.clone())
        .named("../../.secret report.log")
        .captioned("summarise this log");
    service.send_message(0, &IncomingMessage::file(USER, USER, document));
    let answer = service
        .wait_for_message(0, USER, |t| t.contains("Attached file: "))
        .await;
    let paths = paths_after(&answer, "Attached file: ");
    assert_eq!(paths.len(), 1, "{answer}");
    assert_eq!(
        paths[0].file_name().and_then(|n| n.to_str()),
        Some("secret_report.log"),
        "no path parts, no leading dot"
    );
    assert!(paths[0].starts_with(service.dir.path().join(".agentlab/inbox")));
    assert_eq!(std::fs::read(&paths[0]).expect("saved file"), sent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_photo_without_caption_asks_to_look_at_it() {
    let service = Service::start(Options::default()).await;
    let photo = IncomingFile::new(FileKind::Photo, bytes(800, 1));
    service.send_message(0, &IncomingMessage::file(USER, USER, photo));
    let answer = service
        .wait_for_message(0, USER, |t| t.contains("Look at this image: "))
        .await;
    let paths = paths_after(&answer, "Look at this image: ");
    assert_eq!(std::fs::read(&paths[0]).expect("saved"), bytes(800, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversize_file_is_refused_before_any_download() {
    let service = Service::start(Options::default()).await;
    let big = IncomingFile::new(FileKind::Document, "small really")
        .named("huge.iso")
        .claiming_size(25 * 1024 * 1024);
    service.send_message(0, &IncomingMessage::file(USER, USER, big));
    let refusal = service
        .wait_for_message(0, USER, |t| t.contains("too big"))
        .await;
    assert!(refusal.contains("20 MB"), "{refusal}");
    let token = &service.tokens[0];
    assert_eq!(service.sim.call_count(token, "getFile").unwrap(), 0);
    assert_eq!(service.sim.call_count(token, DOWNLOAD).unwrap(), 0);
    assert!(!service.dir.path().join(".agentlab/inbox").exists());
    let (_, tasks) = service.get("/api/tasks").await;
    assert_eq!(tasks.as_array().map(Vec::len), Some(0), "nothing queued");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_failing_twice_is_retried_and_then_succeeds() {
    let service = Service::start(Options::default()).await;
    let token = &service.tokens[0];
    service
        .sim
        .inject_fault(
            token,
            Fault::new(FaultKind::ServerError { status: 502 })
                .on(DOWNLOAD)
                .times(2),
        )
        .unwrap();
    let sent = bytes(2048, 9);
    let document = IncomingFile::new(FileKind::Document, sent.clone()).named("data.bin");
    service.send_message(0, &IncomingMessage::file(USER, USER, document));
    let answer = service
        .wait_for_message(0, USER, |t| t.contains("Look at this file: "))
        .await;
    let paths = paths_after(&answer, "Look at this file: ");
    assert_eq!(std::fs::read(&paths[0]).expect("saved"), sent);
    assert_eq!(service.sim.call_count(token, DOWNLOAD).unwrap(), 3);
    let leftovers: Vec<_> = std::fs::read_dir(paths[0].parent().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "no half file left: {leftovers:?}");
    assert!(
        !service.stderr_text().contains(token.as_str()),
        "the download URL's token never reaches the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_that_keeps_failing_queues_nothing_and_says_so() {
    let service = Service::start(Options::default()).await;
    let token = &service.tokens[0];
    service
        .sim
        .inject_fault(
            token,
            Fault::new(FaultKind::ServerError { status: 502 })
                .on(DOWNLOAD)
                .times(4),
        )
        .unwrap();
    let document = IncomingFile::new(FileKind::Document, bytes(100, 3)).named("x.txt");
    service.send_message(0, &IncomingMessage::file(USER, USER, document));
    let said = service
        .wait_for_message(0, USER, |t| t.contains("NOT queued"))
        .await;
    assert!(!said.contains(token.as_str()), "{said}");
    let inbox = service.dir.path().join(".agentlab/inbox");
    let left = std::fs::read_dir(&inbox).map_or(0, |d| d.count());
    assert_eq!(left, 0, "no folder left in {inbox:?}");
    let (_, tasks) = service.get("/api/tasks").await;
    assert_eq!(tasks.as_array().map(Vec::len), Some(0));
    assert!(!service.stderr_text().contains(token.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_album_becomes_one_prompt() {
    // Both photos are pending before the service polls: one batch, as Telegram sends albums.
    let mut service = Service::prepare(start_sim().await, Options::default());
    let first = IncomingFile::new(FileKind::Photo, bytes(1200, 1))
        .captioned("compare these")
        .in_album("album-1");
    let second = IncomingFile::new(FileKind::Photo, bytes(1600, 2)).in_album("album-1");
    service.send_message(0, &IncomingMessage::file(USER, USER, first));
    service.send_message(0, &IncomingMessage::file(USER, USER, second));
    service.spawn();
    service.wait_ready().await;
    let answer = service
        .wait_for_message(0, USER, |t| t.contains("compare these"))
        .await;
    let paths = paths_after(&answer, "Attached image: ");
    assert_eq!(paths.len(), 2, "{answer}");
    assert_eq!(std::fs::read(&paths[0]).unwrap(), bytes(1200, 1));
    assert_eq!(std::fs::read(&paths[1]).unwrap(), bytes(1600, 2));
    assert_ne!(paths[0], paths[1]);
    let (_, tasks) = service.get("/api/tasks").await;
    assert_eq!(
        tasks.as_array().map(Vec::len),
        Some(1),
        "one task for the album"
    );
}
