include!("../support/prelude.rs");

fn build() -> Machine {
    fsm! {
        state: OrderState; event: OrderEvent; context: Ctx; action: OrderAction; initial: OrderState::Pending;
        state OrderState::Pending {
            timeout std::time::Duration::from_secs(1);
            timeout std::time::Duration::from_secs(2);
        }
    }
}

fn main() { let _ = build(); }
