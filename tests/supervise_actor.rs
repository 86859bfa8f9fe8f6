//! A drive loop hosted by a ractor actor, one `Driver::step` per message, as
//! stage and flow actors will host their supervisors: failures (even panics)
//! stay inside the loop as FSM events and never crash the actor.

mod supervise_support;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use supervise_support::*;
use tokio::sync::oneshot;
use troupe::supervise::{Driver, Progress, WithExternalEvents};

type Hosted = Driver<WithExternalEvents<Sup>>;

struct StageActor;

/// The final state and action log, or why the loop stopped.
type Report = Result<(St, Vec<String>), String>;

struct Hosting {
    driver: Option<Hosted>,
    done: Option<oneshot::Sender<Report>>,
}

struct Advance;

impl Actor for StageActor {
    type Msg = Advance;
    type State = Hosting;
    type Arguments = Hosting;

    async fn pre_start(
        &self,
        myself: ActorRef<Advance>,
        args: Hosting,
    ) -> Result<Hosting, ActorProcessingErr> {
        myself.send_message(Advance)?;
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Advance>,
        _: Advance,
        hosting: &mut Hosting,
    ) -> Result<(), ActorProcessingErr> {
        let Some(driver) = hosting.driver.as_mut() else {
            return Ok(());
        };
        let report = match driver.step().await {
            Ok(Progress::Continued | Progress::Handled) => {
                // Other messages (supervision, stop) get their turn between steps.
                myself.send_message(Advance)?;
                return Ok(());
            }
            Ok(Progress::Terminated) => hosting
                .driver
                .take()
                .map(|d| d.into_outcome())
                .map(|outcome| (outcome.state, outcome.context.log))
                .ok_or_else(|| "no driver".to_owned()),
            Err(error) => Err(error.to_string()),
        };
        if let Some(done) = hosting.done.take() {
            let _ = done.send(report);
        }
        myself.stop(None);
        Ok(())
    }
}

#[tokio::test]
async fn an_actor_hosts_a_supervised_stage() {
    let script = Script::new([
        Step::Continue,
        Step::Panic("scripted panic in a stage".into()),
        Step::Terminate,
    ]);
    let (wrapped, tx, watcher) = with_channel(script.clone(), St::Created);
    let (done_tx, done_rx) = oneshot::channel();
    let hosting = Hosting {
        driver: Some(Driver::new(wrapped, St::Created, Ctx::default())),
        done: Some(done_tx),
    };
    let (actor, join) = Actor::spawn(None, StageActor, hosting).await.unwrap();
    tx.send(Ev::Start).await.unwrap();

    let (state, log) = done_rx.await.unwrap().unwrap();
    join.await.unwrap();
    let failure = "dispatch_state panicked in state `Running`: scripted panic in a stage";
    assert_eq!(state, St::Failed(failure.into()));
    assert_eq!(log, ["started".to_owned(), format!("failure: {failure}")]);
    assert_eq!(*watcher.current(), St::Failed(failure.into()));
    assert_eq!(script.observed().completions, 1);
    assert_eq!(actor.get_status(), ractor::ActorStatus::Stopped);
}
