include!("../support/prelude.rs");

fn build() -> Machine {
    fsm! {
        state: OrderState; event: OrderEvent; context: Ctx; action: OrderAction; initial: OrderState::Pending;
        state OrderState::Pending {
            on_exit => |_, _| vec![];
            on_exit => |_, _| vec![];
        }
    }
}

fn main() { let _ = build(); }
