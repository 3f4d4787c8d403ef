"""The demo world: a generated flash-sale history and the one-command demo run. The product never imports it."""
