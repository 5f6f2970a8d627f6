"""The cloud stage: CloudFormation templates beside the tooling that deploys them (``deploy``)."""
