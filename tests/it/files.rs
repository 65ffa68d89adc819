//! Files between the phone and the agent, end to end: the real binary, the
//! simulator's `getFile` and downloads, the test agent (which echoes its
//! prompt, so the prompt names the saved paths).

use std::path::PathBuf;

use telegram_sim::{DOWNLOAD, Fault, FaultKind, FileKind, IncomingFile, IncomingMessage, SentKind};

use agentlab_testkit::service::start_sim;

use crate::harness::{Options, Service, wait_until};

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

/// Waits for a document or photo sent to `USER`; its name and bytes.
async fn wait_for_upload(service: &Service, name: &str) -> (SentKind, Vec<u8>) {
    wait_until(&format!("`{name}` sent"), || {
        service.sent_to(0, USER).into_iter().find_map(|item| {
            let document = item.document?;
            (document.file_name.as_deref() == Some(name)).then_some((item.kind, document.content))
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn file_sends_a_project_file_byte_identical() {
    let service = Service::start(Options::default()).await;
    let content = bytes(70_000, 5);
    std::fs::create_dir_all(service.dir.path().join("build")).unwrap();
    std::fs::write(service.dir.path().join("build/out.pdf"), &content).unwrap();
    service.send(0, USER, "/file build/out.pdf");
    let (kind, received) = wait_for_upload(&service, "out.pdf").await;
    assert_eq!(kind, SentKind::Document);
    assert_eq!(received, content);
}

#[tokio::test(flavor = "multi_thread")]
async fn file_refuses_paths_that_leave_the_workdir() {
    let service = Service::start(Options::default()).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "top secret").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        service.dir.path().join("innocent.txt"),
    )
    .unwrap();
    let absolute = outside.path().join("secret.txt");
    for path in [
        "../../etc/passwd".to_owned(),
        absolute.display().to_string(),
        "innocent.txt".to_owned(),
    ] {
        service.send(0, USER, &format!("/file {path}"));
        service
            .wait_for_message(0, USER, |t| {
                t.contains(&format!("`{path}` is outside the project"))
            })
            .await;
    }
    assert!(
        service
            .sent_to(0, USER)
            .iter()
            .all(|i| i.document.is_none()),
        "nothing was sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn file_answers_helpfully_for_a_folder_or_a_missing_file() {
    let service = Service::start(Options::default()).await;
    std::fs::create_dir_all(service.dir.path().join("docs")).unwrap();
    std::fs::write(service.dir.path().join("docs/guide.md"), "# guide").unwrap();
    service.send(0, USER, "/file docs");
    service
        .wait_for_message(0, USER, |t| {
            t.contains("`docs` is a folder") && t.contains("guide.md")
        })
        .await;
    service.send(0, USER, "/file docs/gide.md");
    service
        .wait_for_message(0, USER, |t| {
            t.contains("There is no `docs/gide.md`") && t.contains("guide.md")
        })
        .await;
    service.send(0, USER, "/file");
    service
        .wait_for_message(0, USER, |t| t.contains("Send /file PATH"))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn outbox_files_written_by_the_agent_arrive_after_the_answer_once() {
    // The agent: the test agent, after writing two files into the outbox.
    let scripts = tempfile::tempdir().unwrap();
    let script = scripts.path().join("agent.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nmkdir -p .agentlab/outbox\nprintf 'PNGDATA' > .agentlab/outbox/chart.png\n\
             printf 'report body' > .agentlab/outbox/report.txt\nexec {:?} test-agent \"$@\"\n",
            crate::harness::binary()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // A process per prompt, so that each task runs the script (a warm process
    // would answer the second prompt without writing files again).
    let options = Options {
        agent_toml: Some(format!(
            "command = [{:?}]\nkeep_warm_s = 0",
            script.display().to_string()
        )),
        ..Options::default()
    };
    let service = Service::start(options).await;
    service.send(0, USER, "make the report");
    let (kind, content) = wait_for_upload(&service, "report.txt").await;
    assert_eq!(
        (kind, content.as_slice()),
        (SentKind::Document, &b"report body"[..])
    );
    let (kind, content) = wait_for_upload(&service, "chart.png").await;
    assert_eq!(
        (kind, content.as_slice()),
        (SentKind::Photo, &b"PNGDATA"[..])
    );
    let sent = service.sent_to(0, USER);
    let answer = sent
        .iter()
        .position(|i| {
            i.shown_text()
                .is_some_and(|t| t.starts_with("You said: make the report"))
        })
        .expect("answered");
    let first_file = sent.iter().position(|i| i.document.is_some()).unwrap();
    assert!(answer < first_file, "files after the answer: {sent:#?}");
    let outbox = service.dir.path().join(".agentlab/outbox");
    assert!(outbox.join("sent/report.txt").exists() && !outbox.join("report.txt").exists());
    // The next task's answer brings the files it wrote, not the old ones again.
    service.send(0, USER, "again");
    service
        .wait_for_message(0, USER, |t| t.starts_with("You said: again"))
        .await;
    wait_until("the second report", || {
        outbox.join("sent/report-2.txt").exists().then_some(())
    })
    .await;
    wait_until("four uploads", || {
        (service
            .sent_to(0, USER)
            .iter()
            .filter(|i| i.document.is_some())
            .count()
            == 4)
            .then_some(())
    })
    .await;
}
