include!("../support/prelude.rs");

fn build() -> Machine {
    fsm! {
        state: OrderState; event: OrderEvent; context: Ctx; action: OrderAction;
        initial: OrderState::Pending;
        state OrderState::Pending {
            timeout std::time::Duration::from_secs(5) => [OrderState::Expired] sync |_, _| {
                Transition::to(OrderState::Failed("expired".into()))
            };
        }
    }
}

fn main() { let _ = build(); }
