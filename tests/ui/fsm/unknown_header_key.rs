include!("../support/prelude.rs");

fn build() -> Machine {
    fsm! {
        state: OrderState; event: OrderEvent; context: Ctx; action: OrderAction;
        intial: OrderState::Pending;
    }
}

fn main() { let _ = build(); }
