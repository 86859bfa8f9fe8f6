include!("../support/prelude.rs");

fn build() -> Machine {
    fsm! {
        state: OrderState; event: OrderEvent; context: Ctx; action: OrderAction;
        initial: OrderState::Pending;
        state OrderState::Pending {
            // `sync` with an async body: the marker is wrong, not the body.
            on OrderEvent::Pay => sync |_, _, _| Box::pin(async { Ok(Transition::to(OrderState::Pending)) });
        }
    }
}

fn main() { let _ = build(); }
