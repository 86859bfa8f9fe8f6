include!("../support/prelude.rs");

fn build() -> Machine {
    fsm! {
        state: OrderState; event: OrderEvent; context: Ctx; action: OrderAction;
        initial: OrderState::Pending;
        state OrderState::Pending {
            // A sync handler returns its result, not a state.
            on OrderEvent::Pay => sync |_, _, _| OrderState::Pending;
        }
    }
}

fn main() { let _ = build(); }
