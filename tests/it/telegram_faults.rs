//! Telegram faults: the simulator answers 5xx, 429, drops connections and
//! re-delivers updates; the bot answers every prompt exactly once.

use telegram_sim::{Fault, FaultKind};

use crate::harness::{Options, Service};

#[tokio::test(flavor = "multi_thread")]
async fn every_prompt_is_answered_exactly_once_through_telegram_faults() {
    let service = Service::start(Options::default()).await;
    let token = service.tokens[0].clone();
    let faults = [
        Fault::new(FaultKind::DuplicateUpdates)
            .on("getUpdates")
            .times(3),
        Fault::new(FaultKind::ServerError { status: 502 })
            .on("sendMessage")
            .times(2),
        Fault::new(FaultKind::TooManyRequests { retry_after: 1 })
            .on("sendMessage")
            .times(2),
        Fault::new(FaultKind::DropConnection)
            .on("getUpdates")
            .times(1),
        Fault::new(FaultKind::DropConnection)
            .on("sendMessage")
            .times(1),
    ];
    for fault in faults {
        service.sim.inject_fault(&token, fault).expect("fault");
    }
    let users = [111, 222, 333];
    let mut last_update = 0;
    // Rounds, each answered before the next: every round needs fresh polls, so the
    // getUpdates faults are all consumed whatever the machine's speed.
    for round in 0..4 {
        for user in users {
            last_update = service.send(0, user, &format!("faulty {user}-{round}"));
        }
        for user in users {
            let echo = format!("You said: faulty {user}-{round}\n");
            service
                .wait_for_message(0, user, |t| t.starts_with(&echo))
                .await;
        }
    }
    // Every update confirmed: any re-delivery has been handled by now.
    service
        .sim
        .wait_for_confirmed(&token, last_update, crate::harness::PATIENCE)
        .await
        .expect("updates confirmed");
    for user in users {
        for round in 0..4 {
            let echo = format!("You said: faulty {user}-{round}\n");
            let answers = service
                .messages_to(0, user)
                .into_iter()
                .filter(|m| m.starts_with(&echo))
                .count();
            assert_eq!(answers, 1, "{echo:?} answered {answers} times");
        }
    }
    let deadline = std::time::Instant::now() + crate::harness::PATIENCE;
    loop {
        let left = service.sim.faults(&token).expect("faults");
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "faults never hit: {left:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, tasks) = service.get("/api/tasks?limit=1000").await;
    assert_eq!(
        tasks.as_array().map(Vec::len),
        Some(12),
        "one task per prompt, none duplicated"
    );
}
