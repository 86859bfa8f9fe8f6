//! Quickstart: an order's lifecycle as an `fsm!` state machine.
//!
//! `cargo run --example fsm_lifecycle`
//!
//! It walks two orders through their lifecycle: one that is paid, packed and
//! delivered, and one whose payment never arrives and times out. Along the way
//! it shows actions running after each transition, entry hooks, an any-state
//! handler for cancellation, a typed error for an event the current state does
//! not accept, synchronous handlers next to an async one, terminal states
//! checked by `verify`, and the machine's declared table as a Mermaid diagram.

use std::time::Duration;

use troupe::prelude::*;

#[derive(Debug, Clone, PartialEq, StateVariant)]
enum Order {
    AwaitingPayment,
    Paid { amount_cents: u64 },
    Shipped { tracking: String },
    Delivered,
    Cancelled { reason: String },
}

#[derive(Debug, Clone, EventVariant)]
enum OrderEvent {
    PaymentReceived { amount_cents: u64 },
    Shipped { tracking: String },
    Delivered,
    Cancel(String),
}

/// What actions work on: here, an outbox of notifications and a ledger.
#[derive(Default)]
struct Shop {
    outbox: Vec<String>,
    revenue_cents: u64,
}
impl FsmContext for Shop {}

#[derive(Debug)]
enum ShopAction {
    Email(String),
    Book(u64),
    Refund,
}

#[async_trait]
impl FsmAction for ShopAction {
    type Context = Shop;
    async fn execute(&self, shop: &mut Shop) -> Result<(), FsmError> {
        match self {
            ShopAction::Email(text) => shop.outbox.push(text.clone()),
            ShopAction::Book(cents) => shop.revenue_cents += cents,
            ShopAction::Refund => shop.outbox.push("refund issued".into()),
        }
        Ok(())
    }
}

type OrderMachine = StateMachine<Order, OrderEvent, Shop, ShopAction>;

fn order_lifecycle() -> OrderMachine {
    fsm! {
        state: Order; event: OrderEvent; context: Shop; action: ShopAction;
        initial: Order::AwaitingPayment;
        terminal: Order::Delivered, Order::Cancelled;

        // Handlers that only decide (no `.await`) are `sync`: they return the
        // transition itself and the machine makes no future for them.
        state Order::AwaitingPayment {
            on OrderEvent::PaymentReceived => [Order::Paid] sync |_, e, _| {
                let OrderEvent::PaymentReceived { amount_cents } = *e else { unreachable!() };
                if amount_cents == 0 {
                    return Err(FsmError::handler("a payment must be positive"));
                }
                Ok(Transition::to(Order::Paid { amount_cents }).with_action(ShopAction::Book(amount_cents)))
            };
            // Unpaid orders are released after 15 minutes.
            timeout Duration::from_secs(15 * 60) => [Order::Cancelled] sync |_, _| {
                Transition::to(Order::Cancelled { reason: "payment timed out".into() })
            };
        }
        state Order::Paid {
            on OrderEvent::Shipped => [Order::Shipped] sync |_, e, _| {
                let OrderEvent::Shipped { tracking } = e else { unreachable!() };
                let email = ShopAction::Email(format!("your parcel is on its way: {tracking}"));
                Transition::to(Order::Shipped { tracking: tracking.clone() }).with_action(email)
            };
            on_entry => |_, _| vec![ShopAction::Email("payment received, thank you".into())];
        }
        state Order::Shipped {
            on OrderEvent::Delivered => [Order::Delivered] sync |_, _, _| Transition::to(Order::Delivered);
        }
        state Order::Delivered {
            // Overrides the any-state Cancel below: too late to cancel. `[]`:
            // it never moves, so the terminal state stays final.
            on OrderEvent::Cancel => [] sync |_, _, _| {
                Err(FsmError::handler("already delivered; open a return instead"))
            };
            on_entry => |_, _| vec![ShopAction::Email("delivered: enjoy!".into())];
        }

        // Any state not listed handles Cancel itself: refund if money came in.
        // An async handler (it could await a payment provider); sync and
        // async handlers mix freely.
        state _ {
            on OrderEvent::Cancel => [Order::Cancelled] |s, e, _| {
                let OrderEvent::Cancel(reason) = e else { unreachable!() };
                let refund = matches!(s, Order::Paid { .. });
                let reason = reason.clone();
                Box::pin(async move {
                    let t = Transition::to(Order::Cancelled { reason });
                    Ok(if refund { t.with_action(ShopAction::Refund) } else { t })
                })
            };
        }
    }
}

/// Handles one event and runs its actions, printing what happened.
async fn step(order: &mut OrderMachine, shop: &mut Shop, event: OrderEvent) {
    let label = format!("{event:?}");
    match order.handle(event, shop).await {
        Ok(actions) => {
            let count = actions.len();
            if let Err(e) = order.execute_actions(actions, shop).await {
                println!("  {label:<50} action failed: {e}");
                return;
            }
            println!("  {label:<50} -> {:?} ({count} action(s))", order.state());
        }
        Err(e) => println!("  {label:<50} rejected: {e}"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut shop = Shop::default();

    // Every state reachable and able to finish, every event handled.
    match order_lifecycle().verify() {
        Ok(()) => println!("the order lifecycle verifies: no dead end, nothing unreachable\n"),
        Err(report) => println!("{report}"),
    }

    println!("order #1: the happy path");
    let mut first = order_lifecycle();
    step(
        &mut first,
        &mut shop,
        OrderEvent::PaymentReceived { amount_cents: 0 },
    )
    .await;
    step(
        &mut first,
        &mut shop,
        OrderEvent::PaymentReceived {
            amount_cents: 4_200,
        },
    )
    .await;
    step(&mut first, &mut shop, OrderEvent::Delivered).await; // not yet shipped
    step(
        &mut first,
        &mut shop,
        OrderEvent::Shipped {
            tracking: "ZX-81".into(),
        },
    )
    .await;
    step(&mut first, &mut shop, OrderEvent::Delivered).await;
    step(
        &mut first,
        &mut shop,
        OrderEvent::Cancel("changed my mind".into()),
    )
    .await;

    println!("\norder #2: payment never arrives");
    let mut second = order_lifecycle();
    let limit = second
        .state_timeout()
        .expect("AwaitingPayment has a timeout");
    println!(
        "  waiting for payment, at most {} min",
        limit.as_secs() / 60
    );
    // A real host would `tokio::select!` between its event source and
    // `second.wait_deadline()`; here the deadline is simply declared reached.
    match second.handle_timeout(&mut shop).await {
        Ok(actions) => {
            second
                .execute_actions(actions, &mut shop)
                .await
                .expect("no actions");
            println!("  {:<50} -> {:?}", "(payment timeout)", second.state());
        }
        Err(e) => println!("  timeout failed: {e}"),
    }

    println!("\noutbox:");
    for message in &shop.outbox {
        println!("  - {message}");
    }
    println!("revenue: {:.2}", shop.revenue_cents as f64 / 100.0);
    println!("\nthe order lifecycle as a Mermaid diagram (paste into mermaid.live):\n");
    print!("{}", first.to_mermaid());
}
