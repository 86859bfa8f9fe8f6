use troupe::fsm::StateVariant;

#[derive(StateVariant)]
struct NotAnEnum {
    field: u8,
}

fn main() {}
