//! The traits users implement (or derive) to plug their types into a machine.

use async_trait::async_trait;

use super::FsmError;

/// A state enum whose variants can be named without their fields.
///
/// Derive it with `#[derive(StateVariant)]`; the derive names each variant
/// after its identifier, for unit, tuple and struct variants alike.
///
/// ```
/// use troupe::fsm::StateVariant;
/// #[derive(StateVariant)]
/// enum Order { Pending, Failed(String), Shipped { carrier: String } }
/// assert_eq!(Order::Failed("x".into()).variant_name(), "Failed");
/// assert_eq!(Order::VARIANTS, &["Pending", "Failed", "Shipped"]);
/// ```
pub trait StateVariant {
    /// Every variant name of the enum, in declaration order (empty for manual
    /// implementations that do not list them).
    const VARIANTS: &'static [&'static str] = &[];

    /// The name of this value's variant.
    fn variant_name(&self) -> &'static str;
}

/// An event enum whose variants can be named without their fields.
///
/// Derive it with `#[derive(EventVariant)]`; see [`StateVariant`].
pub trait EventVariant {
    /// Every variant name of the enum, in declaration order (empty for manual
    /// implementations that do not list them).
    const VARIANTS: &'static [&'static str] = &[];

    /// The name of this value's variant.
    fn variant_name(&self) -> &'static str;
}

/// Marker for the context a machine's handlers and actions work on.
///
/// Implement it with an empty impl: `impl FsmContext for MyCtx {}`. It exists
/// so that a context type is declared as one on purpose.
pub trait FsmContext {}

impl FsmContext for () {}

/// A side effect a transition asks for; run by
/// [`StateMachine::execute_actions`](super::StateMachine::execute_actions)
/// after the state has changed.
///
/// ```
/// use async_trait::async_trait;
/// use troupe::fsm::{FsmAction, FsmContext, FsmError};
///
/// struct Outbox { sent: Vec<String> }
/// impl FsmContext for Outbox {}
///
/// enum Notify { Email(String) }
///
/// #[async_trait]
/// impl FsmAction for Notify {
///     type Context = Outbox;
///     async fn execute(&self, ctx: &mut Outbox) -> Result<(), FsmError> {
///         match self {
///             Notify::Email(to) if to.contains('@') => Ok(ctx.sent.push(to.clone())),
///             Notify::Email(to) => Err(FsmError::action(format!("bad address {to}"))),
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait FsmAction: Send + Sync {
    /// The context the action works on (the machine's context type).
    type Context: Send;

    /// Runs the action.
    async fn execute(&self, ctx: &mut Self::Context) -> Result<(), FsmError>;

    /// Runs the action at once when it needs no `.await`, and returns its
    /// result; `None` (the default) has
    /// [`execute_actions`](super::StateMachine::execute_actions) await
    /// [`execute`](Self::execute) instead.
    ///
    /// `#[async_trait]` boxes every `execute` future, so an action that is
    /// plain synchronous work (count, record, `try_send`) pays an allocation
    /// per run; answering here spares it. Answer per value: an enum can run
    /// some variants here and leave the others to `execute`. When this
    /// returns `Some`, `execute` is not called for that run: both of
    /// troupe's runners ([`execute_actions`](super::StateMachine::execute_actions)
    /// and the supervised drive loop of [`crate::supervise`], which also
    /// catches a panic here) ask this first.
    ///
    /// ```
    /// use async_trait::async_trait;
    /// use troupe::fsm::{FsmAction, FsmContext, FsmError};
    ///
    /// struct Tally { seen: u64 }
    /// impl FsmContext for Tally {}
    ///
    /// enum Step { Count, Flush }
    ///
    /// #[async_trait]
    /// impl FsmAction for Step {
    ///     type Context = Tally;
    ///     async fn execute(&self, ctx: &mut Tally) -> Result<(), FsmError> {
    ///         match self {
    ///             Step::Count => ctx.seen += 1,
    ///             Step::Flush => tokio::task::yield_now().await,
    ///         }
    ///         Ok(())
    ///     }
    ///     fn execute_now(&self, ctx: &mut Tally) -> Option<Result<(), FsmError>> {
    ///         match self {
    ///             Step::Count => {
    ///                 ctx.seen += 1;
    ///                 Some(Ok(()))
    ///             }
    ///             Step::Flush => None,
    ///         }
    ///     }
    /// }
    /// ```
    fn execute_now(&self, ctx: &mut Self::Context) -> Option<Result<(), FsmError>> {
        let _ = ctx;
        None
    }
}

/// The action type of a machine whose header leaves out `action:`: there
/// are no actions. It is uninhabited, so a transition's action list is
/// always empty and never allocates, and it works with any context `C`.
///
/// ```
/// use troupe::fsm::{fsm, EventVariant, NoAction, StateMachine, StateVariant, Transition};
///
/// #[derive(Debug, PartialEq, StateVariant)]
/// enum Lamp { Off, On }
/// #[derive(Debug, EventVariant)]
/// enum Flip { Flip }
///
/// // No `action:` key: the machine's action type is `NoAction<()>`.
/// let mut lamp: StateMachine<Lamp, Flip, (), NoAction<()>> = fsm! {
///     state: Lamp; event: Flip; context: (); initial: Lamp::Off;
///     state Lamp::Off { on Flip::Flip => [Lamp::On] sync |_, _, _| Transition::to(Lamp::On); }
///     state Lamp::On { on Flip::Flip => [Lamp::Off] sync |_, _, _| Transition::to(Lamp::Off); }
/// };
/// let actions = lamp.handle_now(&Flip::Flip, &mut ()).expect("sync")?;
/// assert!(actions.is_empty());
/// assert_eq!(lamp.state(), &Lamp::On);
/// # Ok::<(), troupe::fsm::FsmError>(())
/// ```
pub enum NoAction<C> {
    #[doc(hidden)]
    Never(
        std::convert::Infallible,
        std::marker::PhantomData<fn() -> C>,
    ),
}

impl<C> std::fmt::Debug for NoAction<C> {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            NoAction::Never(never, _) => match never {},
        }
    }
}

#[async_trait]
impl<C: Send> FsmAction for NoAction<C> {
    type Context = C;

    async fn execute(&self, _: &mut C) -> Result<(), FsmError> {
        match *self {
            NoAction::Never(never, _) => match never {},
        }
    }

    fn execute_now(&self, _: &mut C) -> Option<Result<(), FsmError>> {
        match *self {
            NoAction::Never(never, _) => match never {},
        }
    }
}
