include!("../support/prelude.rs");

fn build() -> Machine {
    fsm! {
        state: OrderState; event: OrderEvent; context: Ctx; action: OrderAction; initial: OrderState::Pending;
        state _ {
            on_entry => |_, _| vec![];
        }
    }
}

fn main() { let _ = build(); }
