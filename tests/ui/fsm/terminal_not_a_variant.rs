include!("../support/prelude.rs");

fn build() -> Machine {
    fsm! {
        state: OrderState; event: OrderEvent; context: Ctx; action: OrderAction;
        initial: OrderState::Pending;
        terminal: OrderState::Failed, OrderState::Shipped;
        state OrderState::Pending {
            on OrderEvent::Pay => [OrderState::Pending] sync |_, _, _| Transition::to(OrderState::Pending);
        }
    }
}

fn main() { let _ = build(); }
