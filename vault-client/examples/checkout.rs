//! A checkout service that never stores a card number: it tokenizes the card before saving
//! the order, and its receipt page shows only the masked card (`reveal`, never `detokenize`),
//! so the service needs only the `tokenize` and `reveal` scopes.
//!
//! Run it against a development daemon:
//!
//! ```text
//! vaultd serve --dev                       # writes ./vault-data/dev-api-key
//! cargo run -p vault-client --example checkout
//! ```
//!
//! Environment: `VAULT_ENDPOINT` (default `http://127.0.0.1:50051`), `VAULT_API_KEY` or
//! `VAULT_API_KEY_FILE` (default `./vault-data/dev-api-key`), `VAULT_TEMPLATE` (default `pan`).
//! An optional argument is the card number to check out with (default a test card).

// A demo binary: its output is the receipt page.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use vault_client::{CallOptions, Config, Error, SecretString, TokenizeItem, VaultClient};

/// An order as the checkout service stores it: the card is a token.
#[derive(Clone, Debug)]
struct Order {
    id: String,
    items: Vec<(String, u64)>,
    card_token: String,
}

impl Order {
    fn total_cents(&self) -> u64 {
        self.items.iter().map(|(_, cents)| cents).sum()
    }
}

/// The service: a vault client and an order table (in memory; a database in real life).
struct Checkout {
    vault: VaultClient,
    template: String,
    orders: Mutex<HashMap<String, Order>>,
}

impl Checkout {
    /// Tokenizes the card and stores the order. The order id is the idempotency key, so a
    /// retry (by the client or by a user pressing "pay" twice) returns the same token.
    async fn place_order(
        &self,
        id: &str,
        items: Vec<(String, u64)>,
        card_number: SecretString,
    ) -> Result<Order, Error> {
        let item = TokenizeItem::new(card_number).idempotency_key(format!("order-{id}"));
        let token = self
            .vault
            .with_options(CallOptions::new().request_id(format!("checkout-{id}")))
            .tokenize(&self.template, item)
            .await?;
        let order = Order {
            id: id.to_owned(),
            items,
            card_token: token.token,
        };
        self.orders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(order.id.clone(), order.clone());
        Ok(order)
    }

    /// The receipt page: the masked card from `reveal`. A vault outage shows a page without
    /// the card rather than failing the receipt, and never anything more than the mask.
    async fn receipt_page(&self, id: &str) -> Option<String> {
        let order = self
            .orders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()?;
        let card = match self
            .vault
            .reveal(&self.template, &order.card_token, "receipt page")
            .await
        {
            Ok(revealed) => revealed.masked,
            Err(Error::CircuitOpen | Error::Unavailable { .. } | Error::DeadlineExceeded) => {
                "(card details temporarily unavailable)".to_owned()
            }
            Err(e) => format!("(card details not shown: {e})"),
        };
        let mut page = format!("Receipt for order {}\n", order.id);
        for (name, cents) in &order.items {
            page += &format!("  {name:<20} {:>8}\n", money(*cents));
        }
        page += &format!("  {:<20} {:>8}\n", "Total", money(order.total_cents()));
        page += &format!("  Paid with card {card}\n");
        Some(page)
    }
}

fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn api_key() -> Result<SecretString, Box<dyn std::error::Error>> {
    if let Ok(key) = std::env::var("VAULT_API_KEY") {
        return Ok(key.into());
    }
    let path = std::env::var("VAULT_API_KEY_FILE")
        .unwrap_or_else(|_| "./vault-data/dev-api-key".to_owned());
    let key = std::fs::read_to_string(&path)
        .map_err(|e| format!("no VAULT_API_KEY, and cannot read {path}: {e}"))?;
    Ok(key.trim().to_owned().into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint =
        std::env::var("VAULT_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:50051".to_owned());
    let template = std::env::var("VAULT_TEMPLATE").unwrap_or_else(|_| "pan".to_owned());
    let card: SecretString = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "4111111111111111".to_owned())
        .into();
    let config = Config::new(endpoint)
        .api_key(api_key()?)
        .deadline(Duration::from_secs(2));
    print!("{}", run(config, template, card).await?);
    Ok(())
}

/// The example's whole flow: place an order with the card, then render its receipt. Returns
/// what `main` prints. (The end-to-end tests call it against a real daemon.)
pub async fn run(
    config: Config,
    template: String,
    card: SecretString,
) -> Result<String, Box<dyn std::error::Error>> {
    let vault = VaultClient::connect(config).await?;
    let checkout = Checkout {
        vault,
        template,
        orders: Mutex::new(HashMap::new()),
    };

    let order = checkout
        .place_order(
            "1001",
            vec![("Espresso beans".into(), 1890), ("Grinder".into(), 12900)],
            card,
        )
        .await?;
    let mut out = format!(
        "stored order {} with card token {}\n",
        order.id, order.card_token
    );
    if let Some(page) = checkout.receipt_page(&order.id).await {
        out += &format!("\n{page}");
    }
    Ok(out)
}
