"""Questions about past runs: listing and naming them, show, diff, reproduce."""
