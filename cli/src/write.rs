//! The write commands: they go through the journal's single writer, a
//! runtime started on the journal, so they are refused while another
//! process (a live runtime) owns it.

use std::path::Path;

use serde_json::{Value, json};
use troupe::records::{EventKind, NewEvent};
use troupe::runtime::{ReplayInto, Runtime};
use troupe::store::Store;
use uuid::Uuid;

use crate::error::CliError;
use crate::read;
use crate::render;

/// Who wrote what the commands add to a run's log.
const BY: &str = "troupe cli";

/// Checks read-only that the journal exists (a writable open would create
/// one) and that run `id` is in it and has not ended, then starts a runtime
/// on the journal: [`CliError::InUse`] while another process owns it.
async fn writer(path: &Path, id: Uuid) -> Result<Runtime, CliError> {
    {
        let store = read::open(path).await?;
        let run = read::run(&store, id).await?;
        if run.status.is_terminal() {
            return Err(CliError::Ended {
                id,
                status: run.status,
            });
        }
    }
    Ok(Runtime::builder().sqlite(path).start().await?)
}

/// Runs `op` on a runtime over the journal, then shuts the runtime down
/// (releasing the journal) whether `op` succeeded or not.
async fn with_writer<F, T>(path: &Path, id: Uuid, op: F) -> Result<T, CliError>
where
    F: AsyncFnOnce(&Runtime) -> Result<T, CliError>,
{
    let runtime = writer(path, id).await?;
    let result = op(&runtime).await;
    runtime.shutdown().await;
    result
}

/// `troupe signal ID NAME JSON [--stage S]`: accepted into the run's inbox;
/// prints the signal's inbox id. The run gets it when it runs or resumes.
pub async fn signal(
    path: &Path,
    id: Uuid,
    name: &str,
    payload: &str,
    stage: Option<&str>,
    as_json: bool,
) -> Result<String, CliError> {
    let payload: Value = serde_json::from_str(payload).map_err(CliError::BadJson)?;
    let inbox_id = with_writer(path, id, async |runtime| {
        Ok(runtime.send_signal(id, stage, name, payload).await?)
    })
    .await?;
    if as_json {
        return render::json(&json!({ "run_id": id, "inbox_id": inbox_id }));
    }
    Ok(format!(
        "signal {name} accepted for run {id} (inbox id {inbox_id}); its stages get it when the run runs\n"
    ))
}

/// `troupe cancel ID --reason R`: records the reason in the run's log and
/// sets its sticky cancel request; the process running the run cancels it,
/// or it is cancelled when it resumes.
pub async fn cancel(
    path: &Path,
    id: Uuid,
    reason: &str,
    as_json: bool,
) -> Result<String, CliError> {
    let run = with_writer(path, id, async |runtime| {
        let payload = json!({ "reason": reason, "by": BY });
        let event = NewEvent::new(id, EventKind::custom("cancel_reason", payload));
        runtime.journal().append(event).await?;
        Ok(runtime.runs().request_cancel(id).await?)
    })
    .await?;
    if as_json {
        return render::json(&run);
    }
    Ok(format!(
        "cancel requested for run {id} ({}); it is cancelled when it runs or resumes\n",
        run.status.as_str()
    ))
}

/// `troupe dead-letters replay ID --stage S`: puts the stage's dead letters
/// back into the same run's stage input through its inbox; prints their
/// inbox ids.
pub async fn replay(path: &Path, id: Uuid, stage: &str, as_json: bool) -> Result<String, CliError> {
    let ids = with_writer(path, id, async |runtime| {
        let replayed = runtime
            .replay_dead_letters(id, stage, ReplayInto::SameRun)
            .await?;
        Ok(replayed.ids)
    })
    .await?;
    if as_json {
        return render::json(&json!({ "run_id": id, "inbox_ids": ids }));
    }
    Ok(format!(
        "{} dead letters of stage {stage} replayed into run {id}; the stage gets them when the run runs\n",
        ids.len()
    ))
}
