"""The Grace stack: parse the stack config once, build the components, export what people need."""

from grace_infra.components.stack import build_stack

build_stack()
