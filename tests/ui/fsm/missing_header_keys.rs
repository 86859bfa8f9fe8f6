include!("../support/prelude.rs");

fn build() -> Machine {
    fsm! {
        state: OrderState;
        event: OrderEvent;
        initial: OrderState::Pending;
        state OrderState::Pending {}
    }
}

fn main() { let _ = build(); }
