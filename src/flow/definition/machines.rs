//! Machine stages on a flow: [`FlowBuilder::machine_stage`] and its
//! event-taking form (the user-facing docs are on [`MachineStage`]).

use super::{EventStageBuilder, FlowBuilder};
use crate::fsm::{EventVariant, FsmAction, StateVariant};
use crate::stage::durable::Redeliver;
use crate::stage::events::EventPolicy;
use crate::stage::{AsMachine, MachineContext, MachineStage, NoEvents, StageContext};

impl<T: Clone + Send + 'static> FlowBuilder<T> {
    /// Adds a stage that is the user's own `fsm!` machine (a transform, or
    /// a sink with [`MachineStage::as_sink`]): items, the end of input and
    /// the machine's timeouts drive it, its actions emit items, and a
    /// terminal state completes it; see [`MachineStage`]. Its machine's
    /// table goes into the definition's fingerprint (as
    /// [`machine`](Self::machine) declares it), so a run journaled in a
    /// state the changed machine lacks is not resumed blindly.
    pub fn machine_stage<S, E, C, A>(
        self,
        name: impl Into<String>,
        stage: MachineStage<T, S, E, C, A, NoEvents>,
    ) -> Self
    where
        S: StateVariant + Send + Sync + 'static,
        E: EventVariant + Send + Sync + 'static,
        C: Send + 'static,
        A: FsmAction<Context = MachineContext<T, C>> + Send + Sync + 'static,
    {
        self.add_machine(name.into(), None, stage)
    }

    /// Adds `stage` under `name`, taking user events per `events`.
    pub(super) fn add_machine<S, E, C, A, Ev>(
        self,
        name: String,
        events: Option<(EventPolicy, &'static str, Option<Redeliver>)>,
        stage: MachineStage<T, S, E, C, A, Ev>,
    ) -> Self
    where
        S: StateVariant + Send + Sync + 'static,
        E: EventVariant + Send + Sync + 'static,
        C: Send + 'static,
        A: FsmAction<Context = MachineContext<T, C>> + Send + Sync + 'static,
        Ev: Send + 'static,
    {
        let table = (stage.machine)().table();
        let redeliver = events.and_then(|e| e.2);
        let events = events.map(|e| (e.0, e.1));
        let flow = if stage.is_sink() {
            self.add_work(
                name.clone(),
                events,
                redeliver,
                move |ctx: &StageContext| {
                    AsMachine::<_, _, _, _, _, Ev, true>::new(stage.clone(), ctx)
                },
            )
        } else {
            self.add_work(
                name.clone(),
                events,
                redeliver,
                move |ctx: &StageContext| {
                    AsMachine::<_, _, _, _, _, Ev, false>::new(stage.clone(), ctx)
                },
            )
        };
        flow.machine(name, table)
    }
}

impl<T: Clone + Send + 'static, Ev: Send + 'static> EventStageBuilder<T, Ev> {
    /// Adds a machine stage taking events `Ev`: each reaches its machine
    /// through its mapping, as [`StageInput::Event`](crate::stage::StageInput::Event).
    pub fn machine_stage<S, E, C, A>(
        self,
        name: impl Into<String>,
        stage: MachineStage<T, S, E, C, A, Ev>,
    ) -> FlowBuilder<T>
    where
        S: StateVariant + Send + Sync + 'static,
        E: EventVariant + Send + Sync + 'static,
        C: Send + 'static,
        A: FsmAction<Context = MachineContext<T, C>> + Send + Sync + 'static,
    {
        let events = (self.policy, std::any::type_name::<Ev>(), self.redeliver);
        self.flow.add_machine(name.into(), Some(events), stage)
    }
}
