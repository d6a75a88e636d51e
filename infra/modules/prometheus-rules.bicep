// The platform's Prometheus recording and alerting rules as Azure Monitor Prometheus rule groups: managed
// Prometheus does not read PrometheusRule objects, so main.bicep loads the same rule file the chart embeds
// (monitoring/alerts/fraud-detection.rules.yaml, unit-tested with promtool) and this module translates it:
// `expr` -> expression, `for: 10m` -> PT10M, labels.severity -> Azure severity (critical 0, warning 2, else 3).

@description('Prefix of the rule group names.')
@minLength(3)
@maxLength(60)
param namePrefix string

@description('Azure region of the rule groups (the Azure Monitor workspace region).')
@minLength(3)
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Resource ID of the Azure Monitor workspace the rules evaluate against.')
@minLength(1)
param monitorWorkspaceId string

@description('Prometheus rule groups (the `groups` list of a Prometheus rule file).')
@minLength(1)
param ruleGroups array

@description('Action group IDs notified when an alert fires (empty: alerts are only recorded).')
param actionGroupIds array = []

// The key is read through a variable: `for` is a Bicep keyword.
var forKey = 'for'

var actions = [
  for id in actionGroupIds: {
    actionGroupId: id
  }
]

resource groups 'Microsoft.AlertsManagement/prometheusRuleGroups@2023-03-01' = [
  for group in ruleGroups: {
    name: '${namePrefix}-${group.name}'
    location: location
    tags: tags
    properties: {
      description: 'Rules of group ${group.name} from monitoring/alerts/fraud-detection.rules.yaml.'
      enabled: true
      interval: 'PT1M'
      scopes: [
        monitorWorkspaceId
      ]
      rules: [
        for rule in group.rules: {
          record: rule.?record
          alert: rule.?alert
          expression: rule.expr
          for: contains(rule, forKey) ? 'PT${toUpper(rule[forKey])}' : null
          severity: contains(rule, 'alert') ? (rule.?labels.?severity == 'critical' ? 0 : (rule.?labels.?severity == 'warning' ? 2 : 3)) : null
          labels: rule.?labels
          annotations: rule.?annotations
          enabled: true
          actions: contains(rule, 'alert') ? actions : null
        }
      ]
    }
  }
]

@description('Names of the rule groups.')
output names array = [for (group, i) in ruleGroups: groups[i].name]
