include!("../support/prelude.rs");

fn build() -> Machine {
    fsm! {
        state: OrderState; event: OrderEvent; context: Ctx; action: OrderAction;
        initial: OrderState::Pending;
        terminal: OrderState::Failed;
        terminal: OrderState::Pending;
        state OrderState::Pending {}
    }
}

fn main() { let _ = build(); }
