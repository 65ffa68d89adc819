//! Files both ways: what a user sends is fetched with `getFile` and the
//! download URL byte for byte; what the bot uploads is kept for the test.

use teloxide::{
    ApiError, RequestError,
    net::Download,
    prelude::*,
    types::{InputFile, UpdateKind},
};

use super::{TOKEN, USER, bot, start};
use crate::{DOWNLOAD, Fault, FaultKind, FileKind, IncomingFile, IncomingMessage, SentKind};

async fn download(bot: &Bot, path: &str) -> Result<Vec<u8>, teloxide::DownloadError> {
    let mut out = Vec::new();
    bot.download_file(path, &mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn a_photo_has_three_sizes_and_the_largest_holds_the_bytes() {
    let sim = start().await;
    let bot = bot(&sim);
    let bytes: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let photo = IncomingFile::new(FileKind::Photo, bytes.clone())
        .captioned("what is this?")
        .in_album("g1");
    sim.inject_message(TOKEN, &IncomingMessage::file(USER, USER, photo))
        .unwrap();
    let updates = bot.get_updates().await.expect("getUpdates");
    let UpdateKind::Message(message) = &updates[0].kind else {
        panic!("a message");
    };
    assert_eq!(message.caption(), Some("what is this?"));
    assert_eq!(message.media_group_id().map(|g| g.0.as_str()), Some("g1"));
    let sizes = message.photo().expect("photo sizes");
    assert_eq!(sizes.len(), 3);
    let largest = sizes.iter().max_by_key(|s| s.width).unwrap();
    assert_eq!(largest.file.size, 4000);
    let file = bot
        .get_file(largest.file.id.clone())
        .await
        .expect("getFile");
    assert_eq!(download(&bot, &file.path).await.expect("download"), bytes);
    let small = bot
        .get_file(sizes[0].file.id.clone())
        .await
        .expect("getFile");
    assert_eq!(download(&bot, &small.path).await.unwrap().len(), 1000);
    sim.shutdown().await;
}

#[tokio::test]
async fn documents_voice_and_audio_download_and_big_files_are_refused() {
    let sim = start().await;
    let bot = bot(&sim);
    for (kind, name) in [
        (FileKind::Document, Some("report.pdf")),
        (FileKind::Voice, None),
        (FileKind::Audio, Some("song.mp3")),
    ] {
        let mut file = IncomingFile::new(kind, format!("{kind:?} bytes"));
        if let Some(name) = name {
            file = file.named(name);
        }
        sim.inject_message(TOKEN, &IncomingMessage::file(USER, USER, file))
            .unwrap();
    }
    let big = IncomingFile::new(FileKind::Document, "x").claiming_size(21 * 1024 * 1024);
    sim.inject_message(TOKEN, &IncomingMessage::file(USER, USER, big))
        .unwrap();
    let updates = bot.get_updates().await.expect("getUpdates");
    let messages: Vec<_> = updates
        .iter()
        .filter_map(|u| match &u.kind {
            UpdateKind::Message(m) => Some(m),
            _ => None,
        })
        .collect();
    let document = messages[0].document().expect("document");
    assert_eq!(document.file_name.as_deref(), Some("report.pdf"));
    let file = bot.get_file(document.file.id.clone()).await.unwrap();
    assert_eq!(download(&bot, &file.path).await.unwrap(), b"Document bytes");
    let voice = messages[1].voice().expect("voice");
    let file = bot.get_file(voice.file.id.clone()).await.unwrap();
    assert_eq!(download(&bot, &file.path).await.unwrap(), b"Voice bytes");
    let audio = messages[2].audio().expect("audio");
    let file = bot.get_file(audio.file.id.clone()).await.unwrap();
    assert_eq!(download(&bot, &file.path).await.unwrap(), b"Audio bytes");

    let big = messages[3].document().expect("document");
    assert_eq!(big.file.size, 21 * 1024 * 1024);
    let refused = bot.get_file(big.file.id.clone()).await.unwrap_err();
    assert!(
        matches!(&refused, RequestError::Api(ApiError::Unknown(t)) if t.contains("file is too big")),
        "{refused:?}"
    );
    let unknown = bot
        .get_file(teloxide::types::FileId("no-such-file".to_owned()))
        .await
        .unwrap_err();
    assert!(matches!(unknown, RequestError::Api(_)), "{unknown:?}");
    assert!(download(&bot, "documents/missing.bin").await.is_err());
    sim.shutdown().await;
}

#[tokio::test]
async fn download_faults_fail_the_next_downloads_then_serve() {
    let sim = start().await;
    let bot = bot(&sim);
    let doc = IncomingFile::new(FileKind::Document, "payload").named("a.txt");
    sim.inject_message(TOKEN, &IncomingMessage::file(USER, USER, doc))
        .unwrap();
    let updates = bot.get_updates().await.unwrap();
    let UpdateKind::Message(message) = &updates[0].kind else {
        panic!("a message");
    };
    let file = bot
        .get_file(message.document().unwrap().file.id.clone())
        .await
        .unwrap();
    sim.inject_fault(
        TOKEN,
        Fault::new(FaultKind::ServerError { status: 502 })
            .on(DOWNLOAD)
            .times(2),
    )
    .unwrap();
    assert!(download(&bot, &file.path).await.is_err());
    assert!(download(&bot, &file.path).await.is_err());
    assert_eq!(download(&bot, &file.path).await.unwrap(), b"payload");
    assert_eq!(sim.call_count(TOKEN, DOWNLOAD).unwrap(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn uploaded_documents_and_photos_are_kept_with_name_and_caption() {
    let sim = start().await;
    let bot = bot(&sim);
    let png = vec![0x89, b'P', b'N', b'G', 1, 2, 3];
    bot.send_photo(
        ChatId(USER),
        InputFile::memory(png.clone()).file_name("shot.png"),
    )
    .caption("the screen")
    .await
    .expect("sendPhoto");
    bot.send_document(
        ChatId(USER),
        InputFile::memory(b"log line\n".to_vec()).file_name("app.log"),
    )
    .await
    .expect("sendDocument");
    let sent = sim.sent_to(TOKEN, USER).unwrap();
    assert_eq!(sent[0].kind, SentKind::Photo);
    assert_eq!(sent[0].text.as_deref(), Some("the screen"));
    let photo = sent[0].document.as_ref().unwrap();
    assert_eq!(
        (photo.file_name.as_deref(), &photo.content),
        (Some("shot.png"), &png)
    );
    assert_eq!(sent[1].kind, SentKind::Document);
    assert_eq!(sent[1].document.as_ref().unwrap().content, b"log line\n");
    sim.shutdown().await;
}
