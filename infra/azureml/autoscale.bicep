// Autoscale of the Azure ML managed online deployment: the original project's rule (min 2, max 10 instances,
// 70 % CPU), as an Azure Monitor autoscale setting, since the deployment YAML only carries instance_count.
// Deploy after the online deployment exists:
//   az deployment group create --resource-group <rg> --template-file infra/azureml/autoscale.bicep \
//     --parameters workspaceName=<ws> endpointName=fraud-detector deploymentName=blue

@description('Azure ML workspace holding the endpoint.')
@minLength(3)
@maxLength(33)
param workspaceName string

@description('Name of the managed online endpoint.')
@minLength(3)
@maxLength(32)
param endpointName string = 'fraud-detector'

@description('Name of the online deployment to scale.')
@minLength(3)
@maxLength(32)
param deploymentName string = 'blue'

@description('Azure region of the autoscale setting (the workspace region).')
param location string = resourceGroup().location

@description('Minimum instance count.')
@minValue(1)
@maxValue(20)
param minInstances int = 2

@description('Maximum instance count.')
@minValue(1)
@maxValue(20)
param maxInstances int = 10

@description('Average CPU percentage above which one instance is added.')
@minValue(10)
@maxValue(95)
param targetCpuPercent int = 70

@description('Average CPU percentage below which one instance is removed.')
@minValue(5)
@maxValue(90)
param scaleInCpuPercent int = 35

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: workspaceName
}

resource endpoint 'Microsoft.MachineLearningServices/workspaces/onlineEndpoints@2024-10-01' existing = {
  parent: workspace
  name: endpointName
}

resource deployment 'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments@2024-10-01' existing = {
  parent: endpoint
  name: deploymentName
}

resource autoscale 'Microsoft.Insights/autoscalesettings@2022-10-01' = {
  name: 'autoscale-${endpointName}-${deploymentName}'
  location: location
  properties: {
    enabled: true
    targetResourceUri: deployment.id
    profiles: [
      {
        name: 'cpu'
        capacity: {
          minimum: string(minInstances)
          maximum: string(maxInstances)
          default: string(minInstances)
        }
        rules: [
          {
            metricTrigger: {
              metricName: 'CpuUtilizationPercentage'
              metricNamespace: 'microsoft.machinelearningservices/workspaces/onlineendpoints/deployments'
              metricResourceUri: deployment.id
              timeGrain: 'PT1M'
              statistic: 'Average'
              timeWindow: 'PT5M'
              timeAggregation: 'Average'
              operator: 'GreaterThan'
              threshold: targetCpuPercent
            }
            scaleAction: {
              direction: 'Increase'
              type: 'ChangeCount'
              value: '1'
              cooldown: 'PT5M'
            }
          }
          {
            metricTrigger: {
              metricName: 'CpuUtilizationPercentage'
              metricNamespace: 'microsoft.machinelearningservices/workspaces/onlineendpoints/deployments'
              metricResourceUri: deployment.id
              timeGrain: 'PT1M'
              statistic: 'Average'
              timeWindow: 'PT10M'
              timeAggregation: 'Average'
              operator: 'LessThan'
              threshold: scaleInCpuPercent
            }
            scaleAction: {
              direction: 'Decrease'
              type: 'ChangeCount'
              value: '1'
              cooldown: 'PT10M'
            }
          }
        ]
      }
    ]
  }
}

@description('Resource ID of the autoscale setting.')
output id string = autoscale.id
