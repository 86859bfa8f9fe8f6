include!("../support/prelude.rs");

fn build() -> Machine {
    fsm! {
        state: OrderState;
        event: OrderEvent;
        state: OrderState;
        context: Ctx; action: OrderAction; initial: OrderState::Pending;
    }
}

fn main() { let _ = build(); }
