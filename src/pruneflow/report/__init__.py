"""Tables, figures and the claims ledger made from the evaluated variants."""
