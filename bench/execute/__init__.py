"""Running cells and studies: one cell's lifecycle (`runner`), local worker processes (`workers`), Ray (`cluster`,
`localcluster`), claims (`claims`), tracking (`tracking`), tuning (`tuning`), the workspace's folders (`workspace`),
the run key with the carry-over ledger (`identity`, `ledger`, `carry`), and signals (`signals`)."""
