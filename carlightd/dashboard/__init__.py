"""The instrument-cluster web dashboard (`carlightd dashboard`)."""
