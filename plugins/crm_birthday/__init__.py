"""crm_birthday — an example plugin to copy: birthday reminders for contacts.

What it shows, one hook each (see plugin.py):

* ``crm_schema_paths``      fields added to ``contact`` by ``schemas/contact_birthday.yaml``
* ``crm_field_types``       a field type of its own, ``wechat_id`` (``contact.wechat`` uses it)
* ``crm_before_create`` /
  ``crm_before_update``     refusing a change (reminder on, but no birthday) with ``HookRefused``
* ``crm_after_create``      reacting to a new record (logs when the next birthday is)
* ``crm_dashboard_widgets`` an "upcoming birthdays" box on the dashboard
* ``crm_cli_commands``      ``flask --app app crm birthdays [--days N]``
* ``crm_scheduled_jobs``    ``birthday_reminders``, daily, run by ``flask --app app crm jobs run``

Being an example, it is off unless named in ``CRM_PLUGINS`` (``enabled_by_default = False`` below;
delete that line in your copy). Tests: ``pytest plugins/crm_birthday/tests``.
"""

__version__ = "0.1.0"

#: Discovered under plugins/, but only enabled when listed in CRM_PLUGINS.
enabled_by_default = False
