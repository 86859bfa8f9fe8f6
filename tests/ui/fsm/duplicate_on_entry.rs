include!("../support/prelude.rs");

fn build() -> Machine {
    fsm! {
        state: OrderState; event: OrderEvent; context: Ctx; action: OrderAction; initial: OrderState::Pending;
        state OrderState::Pending {
            on_entry => |_, _| vec![OrderAction::Alert];
            on_entry => |_, _| vec![];
        }
    }
}

fn main() { let _ = build(); }
