"""Networks and the LightningModule that trains them."""
