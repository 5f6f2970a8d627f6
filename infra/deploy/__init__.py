"""``make package`` / ``make deploy`` / ``make destroy``: the cloud stack, built and checked offline.

- ``platform``: the Lambda runtime and architecture, and the wheel tags that match them.
- ``templates``: CloudFormation templates read with cfn-lint's decoder (``!Ref`` and friends).
- ``names``: stack and function names of a stage (one spelling for both stacks).
- ``wheels``: the functions' pinned dependencies as wheels for the Lambda platform, cached.
- ``package``: stage the functions, ``chalice package`` each, render the infra template.
- ``stacks``: create/update a CloudFormation stack through a change set, and delete it.
- ``artifacts``: code bundles into the artifacts bucket by content hash.
- ``bridge_image``: the bridge image, tagged by content, built and pushed only when new.
- ``deploy``: the orchestration over injected clients (package → infra → image → functions →
  notification → bridge roll), and ``destroy``.
- ``credentials``: fail in one line, before anything changes, when there are no credentials.
"""
